use super::*;
use crate::report::{CumulativeSwap, Granularity, PatchWork};

fn swap_row(part: &str, layer: Option<usize>, removed: Option<f64>) -> SwapRow {
    SwapRow {
        part: part.into(),
        layer,
        component: "mlp".into(),
        removed,
        introduced: None,
        kl_removed: None,
        kl_introduced: None,
    }
}

fn swap(rows: Vec<SwapRow>, cumulative: Vec<(usize, f64)>) -> SwapSection {
    SwapSection {
        num_prompts: 1,
        num_positions: 10,
        max_positions: 10,
        granularity: Granularity::Component,
        kl_tuned_base: 1.0,
        rows,
        cumulative: cumulative
            .into_iter()
            .map(|(layer, prefix)| CumulativeSwap {
                layer,
                prefix_removed: Some(prefix),
                suffix_removed: Some(0.97),
                prefix_introduced: None,
                suffix_introduced: None,
            })
            .collect(),
    }
}

#[test]
fn a_part_removing_half_is_named_and_a_smaller_one_reads_as_spread_out() {
    let concentrated = SwapHeadline::new(&swap(
        vec![
            swap_row("embed", None, Some(0.01)),
            swap_row("layers.0.mlp", Some(0), Some(0.658)),
            swap_row("layers.1.attn", Some(1), None),
        ],
        vec![(0, 0.2), (1, 0.6)],
    ))
    .unwrap();
    assert_eq!(concentrated.part, "layers.0.mlp");
    assert!(concentrated.concentrated);
    assert_eq!(
        concentrated.sentence(),
        "most of the change sits in layer 0 mlp: swapping it back removes 65.8% of the KL"
    );
    assert_eq!(
        concentrated.cumulative_sentence().as_deref(),
        Some("blocks 0–1 swapped together remove 60.0%; all blocks remove 97.0%")
    );

    let spread = SwapHeadline::new(&swap(
        vec![
            swap_row("layers.0.mlp", Some(0), Some(0.3)),
            swap_row("layers.1.mlp", Some(1), Some(CONCENTRATED_SHARE - 1e-9)),
        ],
        vec![(0, 0.1)],
    ))
    .unwrap();
    assert!(!spread.concentrated);
    assert!(
        spread.sentence().starts_with("the change is spread out"),
        "{}",
        spread.sentence()
    );
    assert_eq!(spread.cumulative_sentence(), None);

    // Exactly the threshold counts as concentrated; ties go to the earlier part.
    let tie = SwapHeadline::new(&swap(
        vec![
            swap_row("layers.0.mlp", Some(0), Some(CONCENTRATED_SHARE)),
            swap_row("layers.1.mlp", Some(1), Some(CONCENTRATED_SHARE)),
        ],
        vec![],
    ))
    .unwrap();
    assert!(tie.concentrated);
    assert_eq!(tie.part, "layers.0.mlp");

    assert_eq!(
        SwapHeadline::new(&swap(vec![swap_row("embed", None, None)], vec![])),
        None
    );
}

fn cell(site: &str, layer: usize, recovered: Option<f64>) -> PatchCell {
    PatchCell {
        hook: format!("blocks.{layer}.hook_{site}"),
        site: site.parse().unwrap(),
        layer,
        tuned_into_base: recovered,
        base_into_tuned: None,
    }
}

fn patch(cells: Vec<PatchCell>) -> PatchSection {
    PatchSection {
        num_prompts: 1,
        num_positions: 10,
        max_positions: 10,
        kl_tuned_base: 1.0,
        kl_base_tuned: 1.0,
        cells,
        position_sweeps: Vec::new(),
        work: PatchWork::default(),
    }
}

#[test]
fn the_patching_headline_is_the_earliest_resid_pre_that_recovers_most_not_the_last() {
    // The fixture's full fine-tune: every late resid_pre recovers a lot; the last one (97%) says nothing.
    let h = PatchHeadline::new(&patch(vec![
        cell("resid_pre", 0, Some(0.0)),
        cell("attn_out", 0, Some(0.22)),
        cell("mlp_out", 0, Some(0.07)),
        cell("resid_pre", 1, Some(0.22)),
        cell("mlp_out", 1, Some(0.12)),
        cell("resid_pre", 2, Some(0.42)),
        cell("resid_pre", 3, Some(0.62)),
        cell("attn_out", 3, Some(0.51)),
        cell("mlp_out", 3, Some(0.64)),
        cell("resid_pre", 4, Some(0.97)),
    ]))
    .unwrap();
    assert_eq!(
        h.entry.as_ref().map(|e| e.hook.as_str()),
        Some("blocks.3.hook_resid_pre")
    );
    assert_eq!(
        h.before_entry.as_ref().map(|e| e.hook.as_str()),
        Some("blocks.2.hook_resid_pre")
    );
    let outputs: Vec<&str> = h.top_outputs.iter().map(|o| o.hook.as_str()).collect();
    assert_eq!(outputs, ["blocks.3.hook_mlp_out", "blocks.3.hook_attn_out"]);
    assert_eq!(
        h.sentence(),
        "most of the divergence is in the residual stream after block 2: blocks.3.hook_resid_pre recovers 62.0% \
         (blocks.2.hook_resid_pre: 42.0%); largest block outputs on their own: blocks.3.hook_mlp_out 64.0%, \
         blocks.3.hook_attn_out 51.0%"
    );
}

#[test]
fn the_patching_headline_says_when_no_resid_pre_recovers_most() {
    let h = PatchHeadline::new(&patch(vec![
        cell("resid_pre", 0, Some(0.1)),
        cell("resid_pre", 1, Some(0.3)),
        cell("resid_pre", 2, None),
    ]))
    .unwrap();
    assert_eq!(h.entry, None);
    assert_eq!(
        h.sentence(),
        "no resid_pre recovers 50.0% of the divergence (at most 30.0%, blocks.1.hook_resid_pre)"
    );
    // The embedding already differs: the divergence is there from the start.
    let h = PatchHeadline::new(&patch(vec![cell("resid_pre", 0, Some(0.9))])).unwrap();
    assert!(
        h.sentence()
            .starts_with("most of the divergence is in the residual stream after the embedding")
    );
    assert_eq!(PatchHeadline::new(&patch(vec![cell("mlp_out", 0, None)])), None);
}

#[test]
fn the_lens_headline_names_the_onset() {
    let point = |layer: Option<usize>, drift: f64| crate::report::LensPoint {
        hook: layer.map_or_else(
            || "blocks.0.hook_resid_pre".into(),
            |l| format!("blocks.{l}.hook_resid_post"),
        ),
        layer,
        drift: Some(Distribution {
            n: 1,
            mean: drift,
            std_err: 0.0,
            min: drift,
            max: drift,
            percentiles: std::collections::BTreeMap::new(),
        }),
        residual_drift: None,
        base_to_final: None,
        tuned_to_final: None,
        top1_agreement: 1.0,
    };
    let lens = LensSection {
        num_prompts: 1,
        num_positions: 1,
        max_positions: 1,
        points: vec![point(None, 0.0), point(Some(0), 0.5), point(Some(1), 1.0)],
        onset: Some(1),
        top_positions: Vec::new(),
        non_finite_positions: 0,
    };
    let h = LensHeadline::new(&lens);
    assert_eq!(h.onset_phrase(), "parting at layer 0 (blocks.0.hook_resid_post)");
    assert_eq!(h.final_drift, Some(1.0));
    let h = LensHeadline::new(&LensSection { onset: None, ..lens });
    assert_eq!(h.onset_phrase(), "no drift");
}
