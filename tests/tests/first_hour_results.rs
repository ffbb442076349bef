//! Issue #15, "results people can read", end to end on the fixtures: CSV/TSV prompt files, prompt ids in the
//! report, the summary and the gate's Markdown, chat templates that loop without end, shared template prefixes
//! counted once, the patching headline that says where the divergence enters, and tables that fit the terminal.
//!
//! Every case works on copies in a [`Sandbox`]; no fixture is modified.

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use mdiff_tests::{Run, Sandbox, fixture};
use serde_json::Value;

const BASE: &str = "tiny-llama/base";
const FULL_FT: &str = "tiny-llama/full-ft";

/// `mdiff compare BASE FULL_FT -o report.json` plus `extra`, in `sb`.
fn compare(sb: &Sandbox, base: &Path, tuned: &Path, extra: &[&str]) -> (Run, PathBuf) {
    let out = sb.join("report.json");
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("compare"),
        base.as_os_str(),
        tuned.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    (sb.mdiff(&args), out)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A policy every report passes, so the gate writes its Markdown.
fn lenient_policy(sb: &Sandbox) -> PathBuf {
    let path = sb.join("policy.toml");
    std::fs::write(&path, "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = 0\n").unwrap();
    path
}

fn gate_markdown(sb: &Sandbox, report: &Path) -> String {
    let (policy, markdown) = (lenient_policy(sb), sb.join("gate.md"));
    let run = sb.mdiff(&[
        OsStr::new("gate"),
        report.as_os_str(),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--markdown"),
        markdown.as_os_str(),
    ]);
    run.assert_ok();
    std::fs::read_to_string(&markdown).unwrap()
}

/// Issue #15: a `.csv` was read line by line, its header scored as a prompt, and JSONL ids were dropped.
#[test]
fn csv_prompts_are_read_by_column_and_their_ids_shown_everywhere() {
    let sb = Sandbox::new();
    let prompts = sb.join("prompts.csv");
    std::fs::write(
        &prompts,
        "id,group,text\nq-hello,chat,\"Hello there, how are you?\"\nq-fox,prose,The quick brown fox jumps over the \
         lazy dog.\nq-multi,prose,\"A prompt \"\"quoted\"\"\nover two lines.\"\n",
    )
    .unwrap();
    let (run, out) = compare(
        &sb,
        &fixture(BASE),
        &fixture(FULL_FT),
        &["--methods", "kl", "--prompts", prompts.to_str().unwrap()],
    );
    run.assert_ok();
    let report = read_json(&out);
    let behaviour = &report["behaviour"];
    assert_eq!(report["schema_version"], "1.6");
    assert_eq!(behaviour["num_prompts"], 3, "the header is not a prompt");
    let rows = behaviour["prompts"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q-hello", "q-fox", "q-multi"]);
    let lines: Vec<u64> = rows.iter().map(|p| p["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert_eq!(rows[1]["group"], "prose");
    let text: String = rows[2]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(text.contains("A prompt \"quoted\"\nover two lines."), "{text:?}");

    // The summary's most divergent positions and the gate's Markdown name prompts by id.
    let table: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("most divergent positions"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(!table.is_empty(), "{}", run.stdout);
    assert!(
        table
            .iter()
            .all(|l| ids.iter().any(|id| l.trim_start().starts_with(id))),
        "{}",
        run.stdout
    );
    let md = gate_markdown(&sb, &out);
    let divergent = md.split("### Most divergent prompts").nth(1).unwrap();
    for id in ids {
        assert!(divergent.contains(&format!("| {id} |")), "{id} not in {divergent}");
    }
}

#[test]
fn tables_without_a_text_column_are_refused_with_the_reason() {
    let sb = Sandbox::new();
    for (name, content, needles) in [
        (
            "p.csv",
            "prompt,id\nhello,1\n",
            &["p.csv:1", r#"no "text" column (found "prompt", "id")"#][..],
        ),
        (
            "p.tsv",
            "messages\n[]\n",
            &["p.tsv:1", "\"messages\" column", ".jsonl"][..],
        ),
        (
            "p.csv",
            "text,id\nfine,1\nnot,fine,here\n",
            &["p.csv:3", "3 cells and the header 2"][..],
        ),
    ] {
        let prompts = sb.join(name);
        std::fs::write(&prompts, content).unwrap();
        let (run, out) = compare(
            &sb,
            &fixture(BASE),
            &fixture(FULL_FT),
            &["--methods", "kl", "--prompts", prompts.to_str().unwrap()],
        );
        run.assert_fails_cleanly(2, needles);
        assert!(!out.exists());
    }
}

/// Issue #15: a chat template with large nested loops rendered forever.
#[test]
fn a_chat_template_that_loops_without_end_stops_with_one_line() {
    let sb = Sandbox::new();
    let base = sb.copy_fixture(BASE, "base");
    let tuned = sb.copy_fixture(FULL_FT, "tuned");
    for dir in [&base, &tuned] {
        std::fs::write(
            dir.join("chat_template.jinja"),
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
        )
        .unwrap();
    }
    let started = std::time::Instant::now();
    let (run, out) = compare(&sb, &base, &tuned, &["--methods", "kl"]);
    run.assert_fails_cleanly(2, &["chat_template.jinja", "template steps and was stopped"]);
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
    assert!(!out.exists());
}

/// Issue #15: prompts sharing a template's opening tokens counted them once per prompt in the headline figures.
#[test]
fn shared_prefixes_count_once_in_the_summaries_and_every_row_stays_complete() {
    let sb = Sandbox::new();
    let prompts = sb.join("prompts.jsonl");
    // Three prompts opening with the same long system message (as a chat template's default one does).
    let system = "You are a careful assistant. Answer briefly and truthfully, and say when you do not know.";
    let lines: Vec<String> = [
        "What is the capital of France?",
        "Name a prime number.",
        "Describe rain.",
    ]
    .iter()
    .enumerate()
    .map(|(i, q)| serde_json::json!({"id": format!("p{i}"), "group": "g", "text": format!("{system} {q}")}).to_string())
    .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let (run, out) = compare(
        &sb,
        &fixture(BASE),
        &fixture(FULL_FT),
        &["--methods", "kl", "--prompts", prompts.to_str().unwrap()],
    );
    run.assert_ok();
    let b = &read_json(&out)["behaviour"];
    let rows = b["prompts"].as_array().unwrap();
    let shared: Vec<u64> = rows
        .iter()
        .map(|p| p["shared_prefix_tokens"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(shared[0], 0);
    assert!(shared[1] > 10 && shared[2] > 10, "{shared:?}");
    let folded: u64 = shared.iter().sum();
    assert_eq!(b["folded_positions"].as_u64().unwrap(), folded);
    assert_eq!(b["groups"]["g"]["folded_positions"].as_u64().unwrap(), folded);
    // Rows keep every position; the summary counts each distinct prefix once.
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|p| p["kl_tuned_base"].as_array().unwrap().iter().filter_map(Value::as_f64))
        .collect();
    assert_eq!(
        rows.iter()
            .map(|p| p["tokens"].as_array().unwrap().len())
            .sum::<usize>(),
        all.len()
    );
    let kept: Vec<f64> = rows
        .iter()
        .zip(&shared)
        .flat_map(|(p, &s)| {
            let kl = p["kl_tuned_base"].as_array().unwrap();
            kl.iter()
                .skip(usize::try_from(s).unwrap())
                .filter_map(Value::as_f64)
                .collect::<Vec<_>>()
        })
        .collect();
    let summary = &b["summary"]["kl_tuned_base"];
    assert_eq!(summary["n"].as_u64().unwrap() as usize, kept.len());
    #[allow(clippy::cast_precision_loss)]
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    assert!((summary["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    // No folded position is listed among the most divergent.
    for p in b["top_positions"].as_array().unwrap() {
        let prompt = usize::try_from(p["prompt"].as_u64().unwrap()).unwrap();
        assert!(p["position"].as_u64().unwrap() >= shared[prompt], "{p}");
    }
    assert!(
        run.stdout
            .contains(&format!("{folded} positions left out of the figures below")),
        "{}",
        run.stdout
    );
    // The gate's table shows each prompt from where it differs, not the shared opening five times.
    let md = gate_markdown(&sb, &out);
    assert!(md.contains("positions of shared prefixes counted once"), "{md}");
    assert_eq!(md.matches("You are a careful").count(), 1, "{md}");
}

/// Issue #15: "blocks.29.hook_resid_pre recovers 97%" is true by construction; the headline says where the
/// divergence enters instead.
#[test]
fn the_patching_headline_says_where_the_divergence_enters() {
    let sb = Sandbox::new();
    let (run, out) = compare(&sb, &fixture(BASE), &fixture(FULL_FT), &["--methods", "kl,patch"]);
    run.assert_ok();
    // Sentences wrap to the terminal's width: compare them with single spaces.
    let stdout = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    // The full fine-tune changes block 2 only: resid_pre recovers nothing up to block 2 and everything after it.
    assert!(
        stdout.contains(
            "most of the divergence is in the residual stream after block 2: blocks.3.hook_resid_pre recovers"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("(blocks.2.hook_resid_pre: 0.0%)"), "{stdout}");
    assert!(
        stdout.contains("largest block outputs on their own: blocks.2.hook_mlp_out"),
        "{stdout}"
    );
    let md = gate_markdown(&sb, &out);
    assert!(
        md.contains("| activation patching | most of the divergence is in the residual stream after block 2"),
        "{md}"
    );
}

/// Issue #15: tables ran to 155 columns and help lines to 200.
#[test]
fn tables_and_help_fit_the_terminal_width() {
    let sb = Sandbox::new();
    let (out, base, tuned) = (sb.join("report.json"), fixture(BASE), fixture(FULL_FT));
    let args: Vec<&OsStr> = vec![
        OsStr::new("compare"),
        base.as_os_str(),
        tuned.as_os_str(),
        OsStr::new("--methods"),
        OsStr::new("weights"),
        OsStr::new("-o"),
        out.as_os_str(),
    ];
    let table_lines = |run: &Run| -> Vec<String> {
        run.stdout
            .lines()
            .skip_while(|l| !l.starts_with("tensors by relative change"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(String::from)
            .collect()
    };
    let wide = sb.run(mdiff_tests::mdiff_bin(), &args, &[("COLUMNS", Some(OsStr::new("200")))]);
    wide.assert_ok();
    let natural = table_lines(&wide);
    assert!(natural.iter().any(|l| l.chars().count() > 100), "{natural:?}");
    assert!(
        natural
            .iter()
            .any(|l| l.contains("model.layers.2.self_attn.o_proj.weight"))
    );
    let narrow = sb.run(mdiff_tests::mdiff_bin(), &args, &[("COLUMNS", Some(OsStr::new("90")))]);
    narrow.assert_ok();
    let fitted = table_lines(&narrow);
    assert_eq!(fitted.len(), natural.len());
    for line in &fitted {
        assert!(line.chars().count() <= 90, "{line:?}");
    }
    assert!(
        fitted
            .iter()
            .any(|l| l.contains("layers.2.") && !l.contains("model.layers")),
        "{fitted:?}"
    );
    // Without COLUMNS or a terminal (a pipe, as here), tables fit 100 columns.
    let piped = sb.run(mdiff_tests::mdiff_bin(), &args, &[("COLUMNS", None)]);
    assert!(table_lines(&piped).iter().all(|l| l.chars().count() <= 100));

    for command in [
        &["compare", "--help"][..],
        &["gate", "--help"],
        &["crosscoder", "train", "--help"],
    ] {
        let help = sb.run(mdiff_tests::mdiff_bin(), command, &[("COLUMNS", None)]);
        help.assert_ok();
        for line in help.stdout.lines() {
            assert!(line.chars().count() <= 100, "{command:?}: {line:?}");
        }
    }
}

/// Per prompt row of a report, the role of each token: the tokens' strings are concatenated back into the
/// rendered chat template, the messages' contents looked up in it in order (as docs/methods.md, "Scoring one
/// role's tokens", says), and each token given the role of the content its characters overlap.
fn token_roles(tokens: &[Value], messages: &[(&str, &str)]) -> Vec<Option<String>> {
    let pieces: Vec<&str> = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    let rendered = pieces.concat();
    let mut spans = Vec::new();
    let mut from = 0;
    for &(role, content) in messages {
        let start = rendered[from..].find(content).unwrap() + from;
        from = start + content.len();
        spans.push((start..from, role));
    }
    let mut offset = 0;
    pieces
        .iter()
        .map(|piece| {
            let token = offset..offset + piece.len();
            offset = token.end;
            spans
                .iter()
                .find(|(span, _)| token.start < span.end && token.end > span.start)
                .map(|(_, role)| (*role).to_string())
        })
        .collect()
}

/// Issue #15, Build 6: `--score user|assistant` scores only the positions that predict a token of that role's
/// messages, in the summary and the most divergent positions; rows stay complete.
#[test]
fn score_keeps_only_the_positions_predicting_one_roles_tokens() {
    let sb = Sandbox::new();
    let prompts = sb.join("chat.jsonl");
    let conversations: [&[(&str, &str)]; 2] = [
        &[
            ("user", "What is the capital of France?"),
            ("assistant", "Paris, a city on the Seine."),
            ("user", "And how many people live there?"),
            ("assistant", "About two million in the city itself."),
        ],
        &[
            ("system", "Answer in one short sentence."),
            ("user", "Why is the sky blue?"),
            ("assistant", "Air scatters blue light more than red light."),
        ],
    ];
    let lines: Vec<String> = conversations
        .iter()
        .map(|c| {
            let messages: Vec<Value> = c
                .iter()
                .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                .collect();
            serde_json::json!({ "messages": messages }).to_string()
        })
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let run_with = |score: &str| {
        let args = [
            "--methods",
            "kl",
            "--prompts",
            prompts.to_str().unwrap(),
            "--top-positions",
            "100000",
        ];
        let (run, out) = compare(
            &sb,
            &fixture(BASE),
            &fixture(FULL_FT),
            &[&args[..], &["--score", score]].concat(),
        );
        run.assert_ok();
        read_json(&out)
    };
    let all = run_with("all");
    assert!(
        all["settings"].get("score").is_none(),
        "the default is left out of the report"
    );
    let n_all = all["behaviour"]["summary"]["kl_tuned_base"]["n"].as_u64().unwrap();
    for role in ["user", "assistant"] {
        let report = run_with(role);
        assert_eq!(report["settings"]["score"], role);
        let b = &report["behaviour"];
        let rows = b["prompts"].as_array().unwrap();
        // Every position the summary may count: not a repeat of an earlier prompt's prefix, finite, and predicting
        // (the token after it) a token of `role`'s messages.
        let mut expected = Vec::new();
        for (p, (row, messages)) in rows.iter().zip(conversations).enumerate() {
            let tokens = row["tokens"].as_array().unwrap();
            let kl = row["kl_tuned_base"].as_array().unwrap();
            assert_eq!(kl.len(), tokens.len(), "rows stay complete");
            let roles = token_roles(tokens, messages);
            let shared = usize::try_from(row["shared_prefix_tokens"].as_u64().unwrap_or(0)).unwrap();
            for (t, value) in kl.iter().enumerate().skip(shared) {
                if roles.get(t + 1).is_some_and(|r| r.as_deref() == Some(role)) && value.is_f64() {
                    expected.push((p as u64, t as u64));
                }
            }
        }
        let mut listed: Vec<(u64, u64)> = b["top_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["prompt"].as_u64().unwrap(), d["position"].as_u64().unwrap()))
            .collect();
        listed.sort_unstable();
        assert!(!expected.is_empty());
        assert_eq!(
            listed, expected,
            "--score {role}: the ranked positions are exactly the {role}'s"
        );
        let n = b["summary"]["kl_tuned_base"]["n"].as_u64().unwrap();
        assert_eq!(n, expected.len() as u64);
        assert!(n < n_all, "--score {role} keeps {n} of {n_all} positions");
    }
}

/// Issue #15, Build 6: a `--score` that leaves nothing to score, or that no method applies, is refused in one line.
#[test]
fn score_without_positions_or_without_kl_is_refused() {
    let sb = Sandbox::new();
    let prompts = sb.join("plain.txt");
    std::fs::write(&prompts, "plain text has no assistant turn\n").unwrap();
    let (run, _) = compare(
        &sb,
        &fixture(BASE),
        &fixture(FULL_FT),
        &[
            "--methods",
            "kl",
            "--prompts",
            prompts.to_str().unwrap(),
            "--score",
            "assistant",
        ],
    );
    run.assert_fails_cleanly(2, &["--score assistant leaves no position to score"]);
    let (run, _) = compare(
        &sb,
        &fixture(BASE),
        &fixture(FULL_FT),
        &["--methods", "weights", "--score", "user"],
    );
    run.assert_fails_cleanly(2, &["--score user applies to the kl method only"]);
    let (run, out) = compare(
        &sb,
        &fixture(BASE),
        &fixture(FULL_FT),
        &[
            "--methods",
            "kl,lens",
            "--prompts",
            prompts.to_str().unwrap(),
            "--score",
            "user",
        ],
    );
    run.assert_ok();
    assert!(run.stderr.contains("lens use every position"), "{}", run.stderr);
    assert_eq!(read_json(&out)["settings"]["score"], "user");
}
