//! Token prefixes shared between prompts.
//!
//! A model's next-token distribution at position t depends only on tokens 0..=t, so when two prompts start with
//! the same tokens (a chat template's default system prompt, a beginning-of-sequence token), the positions of that
//! common start carry the same values in both. Summaries count each distinct prefix once (docs/methods.md, "Shared
//! prefixes").

use std::collections::HashMap;

/// For each sequence, in order, how many of its leading tokens an earlier sequence starts with too: position t of
/// sequence i repeats an earlier one exactly when t < the returned length.
#[must_use]
pub fn shared_prefix_lengths<'a, T: Copy + Eq + std::hash::Hash + 'a>(
    sequences: impl IntoIterator<Item = &'a [T]>,
) -> Vec<usize> {
    // A trie of the sequences seen so far, as (node, token) → child; node 0 is the root. Walking a new sequence
    // down it stops where no earlier sequence continues; the rest of the sequence is then added.
    let mut children: HashMap<(usize, T), usize> = HashMap::new();
    let mut nodes = 1;
    let mut lengths = Vec::new();
    for ids in sequences {
        let mut node = 0;
        let mut shared = 0;
        let mut known = true;
        for &id in ids {
            if known && let Some(&child) = children.get(&(node, id)) {
                node = child;
                shared += 1;
                continue;
            }
            known = false;
            children.insert((node, id), nodes);
            node = nodes;
            nodes += 1;
        }
        lengths.push(shared);
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::shared_prefix_lengths;

    #[test]
    fn each_prefix_is_new_only_once() {
        let seqs: [&[u32]; 6] = [&[1, 2, 3, 4], &[1, 2, 3, 5, 6], &[1, 2, 3, 5, 7], &[9], &[1, 2], &[]];
        // The second shares 1 2 3; the third 1 2 3 5 (with the second); the fifth is wholly an earlier prefix.
        assert_eq!(shared_prefix_lengths(seqs), [0, 3, 4, 0, 2, 0]);
        let same: [&[u32]; 3] = [&[4, 4], &[4, 4], &[4, 4, 4]];
        assert_eq!(shared_prefix_lengths(same), [0, 2, 2]);
    }
}
