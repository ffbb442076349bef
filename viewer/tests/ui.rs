//! UI tests of the viewer on the committed fixture reports (issue #4): every panel opens by its label, a prompt
//! click shows its tokens, selecting or hovering a token shows both models' top tokens, bad reports show a
//! readable error. Snapshot tests render the main panels on the CPU (lavapipe); regenerate the images (also used
//! by docs/viewer.md) with `UPDATE_SNAPSHOTS=1 cargo test -p viewer --test ui`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::NodeT;
use egui_kittest::kittest::Queryable;
use mdiff_core::report::{
    ClassCounts, ClassThresholds, CrosscoderSection, CrosscoderTraining, LatentContext, LatentSummary, Report,
    read_report,
};
use mdiff_viewer::{Document, ViewerApp};

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/reports")
        .join(name)
}

fn fixture(name: &str) -> Report {
    read_report(&fixture_path(name)).expect("fixture report; regenerate with UPDATE_FIXTURE_REPORTS=1")
}

/// The viewer with `report` open under the name `source` (shown in the menu bar).
fn harness_named(source: &str, report: Report) -> Harness<'static, ViewerApp> {
    harness_for(ViewerApp::with_document(Document::new(source.into(), report)))
}

/// The viewer with a fixture report open, as if loaded from its file.
fn open_fixture(name: &str) -> Harness<'static, ViewerApp> {
    harness_named(name, fixture(name))
}

/// The viewer with `report` (a fixture, maybe edited) open as `report.json`.
fn harness(report: Report) -> Harness<'static, ViewerApp> {
    harness_named("report.json", report)
}

fn harness_for(app: ViewerApp) -> Harness<'static, ViewerApp> {
    let mut harness = Harness::builder()
        .with_size([1280.0, 800.0])
        .build_ui_state(|ui, app: &mut ViewerApp| app.ui_root(ui), app);
    harness.run();
    harness
}

/// Clicks the tab (the first node with that label: the menu bar is laid out before the panel).
fn open_tab(harness: &mut Harness<'_, ViewerApp>, label: &str) {
    harness.get_all_by_label(label).next().expect(label).click();
    harness.run();
}

#[test]
fn every_panel_opens_by_its_label() {
    let mut harness = open_fixture("tiny-llama-full-ft.json");
    let panels = [
        ("Weights", "Most changed"),
        ("Behaviour", "Most divergent positions"),
        ("Weight swap", "Parts by share removed"),
        ("Patching", "Hooks by share recovered"),
        ("Logit lens", "through its own final norm and unembedding"),
        ("Crosscoder", "Tuned-only latents:"),
        ("Overview", "Weights changed"),
    ];
    for (tab, marker) in panels {
        open_tab(&mut harness, tab);
        assert!(
            harness.query_by_label_contains(marker).is_some(),
            "{tab}: no {marker:?}"
        );
    }
}

#[test]
fn overview_shows_inputs_and_headline_numbers() {
    let report = fixture("tiny-llama-lora.json");
    let lora = report
        .inputs
        .tuned
        .lora
        .clone()
        .expect("the lora fixture has an adapter");
    let harness = harness(report);
    harness.get_by_label("PEFT LoRA adapter on the base");
    harness.get_by_label_contains(&format!("r = {}", lora.r));
    harness.get_by_label("KL(tuned‖base) per token");
    harness.get_by_label("Top-1 agreement");
    // The swap, patching and crosscoder answers, one line each.
    harness.get_by_label_contains("The change is spread out");
    harness.get_by_label_contains("largest block outputs on their own");
    harness.get_by_label_contains("tuned-only latents (");
}

/// Issue #15: the overview's four pictures, on a report with every section.
#[test]
fn the_overview_draws_the_kl_histogram_heatmap_lens_line_and_localized_parts() {
    let harness = open_fixture("tiny-llama-full-ft.json");
    harness.get_by_label("KL(tuned‖base) over all positions");
    harness.get_by_label("Weight change ‖ΔW‖/‖W‖ per layer and component");
    harness.get_by_label("Lens drift per layer");
    harness.get_by_label("Where the change sits");
    harness.get_by_label_contains("Weight swap: share of KL removed");
    harness.get_by_label_contains("Activation patching: share of KL(tuned‖base) recovered");
    // The fixture's full fine-tune changed layer 2's MLP most (fixtures/README.md): it heads both bar lists, and
    // the patching line names where the divergence enters, not a late resid_pre.
    let doc = harness.state().state.document.as_ref().unwrap();
    assert_eq!(
        doc.overview.swap_bars.first().map(|b| b.label.as_str()),
        Some("layer 2 mlp")
    );
    assert_eq!(
        doc.overview.patch_bars.first().map(|b| b.label.as_str()),
        Some("layer 2 mlp_out")
    );
    assert!(doc.overview.patch_bars.iter().all(|b| !b.name.contains("resid_pre")));
    assert!(doc.overview.drift.as_ref().is_some_and(|d| !d.drift.is_empty()));
    harness.get_by_label("layer 2 mlp");
    harness.get_by_label("layer 2 mlp_out");
    // The headline is diff-core's (report::headlines): the block outputs it names lead the bars too.
    let patching = doc.headlines.patching.as_ref().unwrap();
    assert_eq!(patching.top_outputs[0].hook, doc.overview.patch_bars[0].name);
    harness.get_by_label_contains("largest block outputs on their own: blocks.2.hook_mlp_out");
    assert!(harness.query_by_label_contains("No lens section").is_none());
}

/// Issue #15: a report with only the weights section still has an overview; each missing picture says which
/// `--methods` adds it, and why it was skipped when the report says.
#[test]
fn an_overview_without_sections_names_the_methods_that_add_them() {
    let mut report = fixture("tiny-llama-full-ft.json");
    report.behaviour = None;
    report.lens = None;
    report.swap = None;
    report.patching = None;
    report.crosscoder = None;
    report
        .settings
        .methods
        .retain(|m| *m == mdiff_core::report::Method::Weights);
    report.skipped.push(mdiff_core::report::SkippedSection {
        section: "lens".into(),
        method: mdiff_core::report::Method::Lens,
        reason: "the tokenizer is missing".into(),
    });
    let harness = harness(report.clone());
    harness.get_by_label("Weight change ‖ΔW‖/‖W‖ per layer and component");
    harness.get_by_label("No behaviour section");
    harness.get_by_label("add it with mdiff compare … --methods weights,kl");
    harness.get_by_label("No lens section");
    harness.get_by_label("Skipped: the tokenizer is missing");
    harness.get_by_label("add it with mdiff compare … --methods weights,lens");
    harness.get_by_label("No weight swap or patching section");
    harness.get_by_label("add it with mdiff compare … --methods weights,swap (or weights,patch)");

    // And with no section at all, the weights picture says so too.
    report.weights = None;
    report.settings.methods.clear();
    let harness = harness_named("empty.json", report);
    harness.get_by_label("No weights section");
    harness.get_by_label("add it with mdiff compare … --methods weights");
}

#[test]
fn a_cell_of_the_most_changed_list_selects_its_tensors() {
    let report = fixture("tiny-llama-full-ft.json");
    // The fixture's full fine-tune changed layer 2 only (fixtures/README.md).
    let mut harness = harness(report);
    open_tab(&mut harness, "Weights");
    harness.get_by_label_contains("layer 2 · mlp").click();
    harness.run();
    harness.get_by_label("Tensors of layer 2 · mlp");
    assert!(harness.query_by_label("model.layers.2.mlp.down_proj.weight").is_some());
    assert!(harness.query_by_label("model.layers.1.mlp.down_proj.weight").is_none());
    harness.get_by_label("model.layers.2.mlp.down_proj.weight").click();
    harness.run();
    harness.get_by_label_contains("stable rank");
}

#[test]
fn the_tensor_table_sorts_by_a_clicked_column() {
    let mut harness = open_fixture("tiny-llama-full-ft.json");
    open_tab(&mut harness, "Weights");
    harness.get_by_label("Tensor").click();
    harness.run();
    let names: Vec<String> = harness
        .get_all_by_label_contains("model.")
        .filter_map(|n| n.accesskit_node().label())
        .filter(|l| l.starts_with("model.layers") || l.starts_with("model.embed") || l.starts_with("model.norm"))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert!(!names.is_empty());
    assert_eq!(names, sorted, "ascending by name after one click");
}

#[test]
fn a_prompt_click_shows_its_tokens() {
    let report = fixture("tiny-llama-full-ft.json");
    let behaviour = report.behaviour.clone().unwrap();
    // The prompt with the smallest mean KL is at the bottom of the list; pick a mid one by its preview text.
    let target = behaviour
        .prompts
        .iter()
        .find(|p| p.tokens.concat().contains("capital of Australia"))
        .expect("built-in prompt");
    let mut harness = harness(report.clone());
    open_tab(&mut harness, "Behaviour");
    harness
        .get_by_label_contains("What is the capital of Australia")
        .click();
    harness.run();
    harness.get_by_label(&format!("Prompt {} (line {})", target.index, target.line));
    harness.get_by_label(&target.tokens.concat());
}

#[test]
fn selecting_a_token_with_the_arrow_keys_shows_both_models_top_tokens() {
    let report = fixture("tiny-llama-full-ft.json");
    let behaviour = report.behaviour.clone().unwrap();
    let mut harness = harness(report);
    open_tab(&mut harness, "Behaviour");
    let prompt_index = harness.state().state.selection.prompt.unwrap();
    harness.key_press(Key::ArrowRight);
    harness.run();
    harness.key_press(Key::ArrowRight);
    harness.run();
    assert_eq!(harness.state().state.selection.token, Some(1));
    harness.get_by_label("Top next tokens");
    let prompt = &behaviour.prompts[prompt_index];
    for top in [&prompt.top_base[1], &prompt.top_tuned[1]] {
        let (best, p) = top[0];
        let text = format!("{:?}", behaviour.token_strings[&best]);
        assert!(
            harness.query_all_by_label(&text).count() >= 1,
            "top token {text} listed"
        );
        let p = mdiff_viewer::ui::percent(f64::from(p));
        assert!(harness.query_all_by_label(&p).count() >= 1, "its probability {p} shown");
    }
    harness.get_by_label(&mdiff_viewer::ui::number(prompt.kl_tuned_base[1].unwrap()));
}

#[test]
fn hovering_a_token_shows_its_details() {
    let report = fixture("tiny-llama-full-ft.json");
    let mut harness = harness(report);
    open_tab(&mut harness, "Behaviour");
    let prompt = harness.state().state.selection.prompt.unwrap();
    let text = harness
        .state()
        .state
        .document
        .as_ref()
        .unwrap()
        .report
        .behaviour
        .as_ref()
        .unwrap()
        .prompts[prompt]
        .tokens
        .concat();
    let rect = harness.get_by_label(&text).rect();
    harness.hover_at(rect.left_top() + egui::vec2(4.0, 6.0));
    harness.run();
    harness.get_by_label("Position");
    harness.get_by_label("Top next tokens");
    assert_eq!(harness.state().state.selection.token, None, "hover does not select");
}

#[test]
fn the_lens_panel_tables_the_layers_of_a_chosen_position() {
    let report = fixture("tiny-llama-full-ft.json");
    let lens = report.lens.clone().expect("the fixture report has a lens section");
    let mut harness = harness(report);
    open_tab(&mut harness, "Logit lens");
    harness.get_by_label_contains("the predictions part at layer 2");
    let second = &lens.top_positions[1];
    harness
        .get_by_label_contains(&format!("prompt {} · {}:", second.prompt, second.position))
        .click();
    harness.run();
    harness.get_by_label(&format!(
        "Prompt {} · position {} {:?}: the lens at every layer",
        second.prompt, second.position, second.token
    ));
    harness.get_by_label("embedding");
    harness.get_by_label("layer 3");
}

#[test]
fn the_swap_panel_names_the_part_that_carries_the_change() {
    // The fixture's full fine-tune changed layer 2 only, and its MLP most (fixtures/README.md).
    let mut harness = open_fixture("tiny-llama-full-ft.json");
    open_tab(&mut harness, "Weight swap");
    harness.get_by_label_contains("Most of the change sits in layer 2 mlp: swapping it back removes");
    harness.get_by_label_contains("Blocks 0–2 swapped together remove");
    harness.get_by_label("Parts by share removed");
    harness.get_by_label("layers.2.mlp");
    // The LoRA adapter touched every attention block a little: no single part removes half.
    let mut harness = open_fixture("tiny-llama-lora.json");
    open_tab(&mut harness, "Weight swap");
    harness.get_by_label_contains("The change is spread out: no single part removes half of the KL");
}

#[test]
fn the_patching_panel_lists_hooks_and_work_and_switches_the_swept_prompt() {
    let report = fixture("tiny-llama-full-ft.json");
    let patching = report
        .patching
        .clone()
        .expect("the fixture report has a patching section");
    assert!(patching.position_sweeps.len() >= 2, "the fixture sweeps two prompts");
    let (first, second) = (&patching.position_sweeps[0], &patching.position_sweeps[1]);
    let mut harness = harness(report.clone());
    open_tab(&mut harness, "Patching");
    harness.get_by_label_contains(&format!(
        "Work: {} patched runs in {} forward passes",
        mdiff_viewer::ui::count(patching.work.patched_runs),
        mdiff_viewer::ui::count(patching.work.forward_passes)
    ));
    // The hook that recovers the most heads the table.
    harness.get_by_label("blocks.3.hook_resid_pre");
    harness.get_by_label_contains(&format!("Prompt {} ({} tokens", first.prompt, first.tokens.len()));

    harness.get_by_role(egui::Role::ComboBox).click();
    harness.run();
    harness
        .get_by_label_contains(&format!("prompt {} · {} tokens", second.prompt, second.tokens.len()))
        .click();
    harness.run();
    assert_eq!(harness.state().state.selection.patch_sweep, 1);
    harness.get_by_label_contains(&format!("Prompt {} ({} tokens", second.prompt, second.tokens.len()));

    harness.get_by_label("mlp_out").click();
    harness.run();
    // The hooks table's header has the same label; the direction selector comes after it.
    harness.get_all_by_label("base → tuned").last().unwrap().click();
    harness.run();
    harness.get_by_label_contains("mlp_out patched base → tuned at one position");
}

#[test]
fn a_report_without_swap_or_patching_keeps_the_skip_reason() {
    let mut report = fixture("tiny-llama-full-ft.json");
    report.swap = None;
    report.patching = None;
    report.skipped.push(mdiff_core::report::SkippedSection {
        section: "swap".into(),
        method: mdiff_core::report::Method::Swap,
        reason: "needs the tokenizer".into(),
    });
    let mut harness = harness(report);
    open_tab(&mut harness, "Weight swap");
    harness.get_by_label("No swap section in this report");
    harness.get_by_label("Skipped: needs the tokenizer");
    open_tab(&mut harness, "Patching");
    harness.get_by_label("No patching section in this report");
}

#[test]
fn slash_focuses_the_prompt_filter() {
    let mut harness = open_fixture("tiny-llama-full-ft.json");
    open_tab(&mut harness, "Behaviour");
    harness.key_press(Key::Slash);
    harness.run();
    harness.get_by_role(egui::Role::TextInput).type_text("australia");
    harness.run();
    harness.get_by_label("Prompts (1 of 64)");
}

#[test]
fn a_report_without_behaviour_says_how_to_make_it() {
    let mut report = fixture("tiny-llama-full-ft.json");
    report.behaviour = None;
    report
        .settings
        .methods
        .retain(|m| *m == mdiff_core::report::Method::Weights);
    let mut harness = harness(report);
    open_tab(&mut harness, "Behaviour");
    harness.get_by_label("No behaviour section in this report");
    harness.get_by_label_contains("--methods weights,kl");
}

/// A latent of the hand-built crosscoder: decoder norms that sum to 1 split by `r`, its class by the default
/// thresholds, the ν only where given.
fn latent(index: usize, r: f64, frequency: f64, nu: Option<(f64, f64)>, contexts: Vec<LatentContext>) -> LatentSummary {
    LatentSummary {
        index,
        class: ClassThresholds::default().classify(r),
        relative_norm: r,
        norm_base: 1.0 - r,
        norm_tuned: r,
        decoder_cosine: (r > 0.02 && r < 0.98).then_some(0.8 - (r - 0.5).abs()),
        frequency,
        mean_activation: 1.5 + r,
        nu_error: nu.map(|n| n.0),
        nu_reconstruction: nu.map(|n| n.1),
        contexts,
    }
}

/// A token window with the firing token at `highlight`.
fn context(activation: f64, sequence: usize, tokens: &[&str], highlight: usize) -> LatentContext {
    LatentContext {
        activation,
        sequence,
        position: highlight + 3,
        tokens: tokens.iter().map(|t| (*t).to_string()).collect(),
        highlight,
    }
}

/// A crosscoder section as `mdiff compare --methods crosscoder` writes it, small enough to read: 64 latents, 60
/// live (3 base-only, 40 shared, 5 tuned-only, 12 other), and the listing's every base-only and tuned-only latent
/// plus the four most frequent others. By r the table starts with #18; by frequency with #12.
fn crosscoder_section() -> CrosscoderSection {
    let paris = [" The", " capital", " of", " France", " is", " Paris", "."];
    let sure = ["<|user|>", " Tell", " me", ".", "<|assistant|>", " Sure", "!", " Here"];
    CrosscoderSection {
        hook: "blocks.2.hook_resid_post".into(),
        d_model: 64,
        num_latents: 64,
        training: CrosscoderTraining {
            sparsity: "batch_top_k".into(),
            k: Some(8),
            l1_coefficient: None,
            steps: 2000,
            batch_size: 512,
            learning_rate: 4e-4,
            seed: 0,
            tokens_seen: 1_024_000,
            final_loss: 0.0734,
            checkpoint: None,
        },
        num_tokens: 8192,
        fvu_base: 0.12,
        fvu_tuned: 0.1,
        l0: 7.9,
        dead_fraction: 4.0 / 64.0,
        thresholds: ClassThresholds::default(),
        classes: ClassCounts {
            base_only: 3,
            shared: 40,
            tuned_only: 5,
            other: 12,
            dead: 4,
        },
        tuned_only_share: 5.0 / 60.0,
        relative_norm_histogram: vec![2, 1, 1, 0, 1, 1, 1, 2, 6, 14, 13, 7, 2, 1, 1, 0, 1, 1, 2, 3],
        latents: vec![
            latent(
                60,
                0.01,
                0.003,
                None,
                vec![context(2.1, 5, &[" the", " old", " answer"], 2)],
            ),
            latent(
                40,
                0.97,
                0.004,
                Some((0.12, 0.31)),
                vec![context(6.2, 3, &sure, 5), context(4.8, 9, &sure[3..], 2)],
            ),
            latent(29, 0.08, 0.006, None, Vec::new()),
            latent(7, 0.93, 0.011, Some((0.91, 0.88)), vec![context(3.3, 1, &paris, 5)]),
            latent(12, 0.5, 0.21, None, vec![context(2.7, 0, &paris, 3)]),
            latent(51, 0.95, 0.002, Some((0.2, 0.45)), Vec::new()),
            latent(3, 0.04, 0.009, None, Vec::new()),
            latent(25, 0.47, 0.12, None, Vec::new()),
            latent(18, 0.99, 0.001, Some((0.05, 0.1)), Vec::new()),
            latent(31, 0.75, 0.09, None, Vec::new()),
            latent(33, 0.92, 0.03, None, Vec::new()),
            latent(9, 0.55, 0.08, None, Vec::new()),
        ],
    }
}

/// The full fine-tune fixture with [`crosscoder_section`] added, on the crosscoder tab.
fn open_crosscoder() -> Harness<'static, ViewerApp> {
    let mut report = fixture("tiny-llama-full-ft.json");
    report.crosscoder = Some(crosscoder_section());
    let mut harness = harness(report);
    open_tab(&mut harness, "Crosscoder");
    harness
}

/// The latent table's rows, top to bottom, by their first cell (`#index`, a label's value).
fn latent_rows(harness: &Harness<'_, ViewerApp>) -> Vec<String> {
    harness
        .get_all_by_label_contains("#")
        .filter_map(|n| n.accesskit_node().value())
        .filter(|l| l.starts_with('#'))
        .collect()
}

#[test]
fn the_crosscoder_panel_shows_the_tuned_only_share_and_sorts_filters_and_opens_latents() {
    let mut harness = open_crosscoder();
    harness.get_by_label("Tuned-only latents: 8.3% of live (5 of 60)");
    harness.get_by_label("BatchTopK, k = 8");
    harness.get_by_label("base 0.1200 · tuned 0.1000");
    harness.get_by_label("base-only 3 · shared 40 · tuned-only 5 · other 12");
    assert_eq!(
        latent_rows(&harness).first().map(String::as_str),
        Some("#18"),
        "largest r first"
    );

    harness.get_by_label("Frequency").click();
    harness.run();
    assert_eq!(
        latent_rows(&harness).first().map(String::as_str),
        Some("#12"),
        "most frequent first"
    );
    harness.get_by_label("Frequency ▼").click();
    harness.run();
    assert_eq!(
        latent_rows(&harness).first().map(String::as_str),
        Some("#18"),
        "least frequent first"
    );

    // ν is absent on all but the tuned-only latents with a scaling: those stay at the bottom both ways.
    harness.get_by_label("ν^ε").click();
    harness.run();
    assert_eq!(
        latent_rows(&harness).first().map(String::as_str),
        Some("#7"),
        "largest ν^ε first"
    );
    harness.get_by_label("ν^ε ▼").click();
    harness.run();
    assert_eq!(
        latent_rows(&harness).first().map(String::as_str),
        Some("#18"),
        "smallest ν^ε first"
    );

    harness.get_by_label("Tuned-only").click();
    harness.run();
    let mut rows = latent_rows(&harness);
    rows.sort();
    assert_eq!(rows, ["#18", "#33", "#40", "#51", "#7"], "only the tuned-only latents");
    harness.get_by_label_contains("5 of 12 listed");

    harness.get_by_label("#40").click();
    harness.run();
    harness.get_by_label("Latent #40 · tuned-only");
    harness.get_by_label_contains("ν^ε = 0.1200");
    harness.get_by_label("<|user|> Tell me.<|assistant|>[ Sure]! Here");
    harness.get_by_label(".<|assistant|>[ Sure]! Here");
    harness.get_by_label_contains("6.200");

    harness.get_by_label("All classes").click();
    harness.run();
    assert!(harness.query_by_label("#12").is_some(), "every class again");
}

#[test]
fn the_crosscoder_panel_reads_a_fixture_report() {
    let report = fixture("tiny-llama-full-ft.json");
    let crosscoder = report
        .crosscoder
        .clone()
        .expect("the fixture report has a crosscoder section");
    let mut harness = harness(report);
    open_tab(&mut harness, "Crosscoder");
    harness.get_by_label_contains(&format!(
        "of live ({} of {})",
        crosscoder.classes.tuned_only,
        crosscoder.classes.live()
    ));
    let first = latent_rows(&harness).first().cloned().expect("a latent row");
    harness.get_by_label(&first).click();
    harness.run();
    let index: usize = first.trim_start_matches('#').parse().unwrap();
    let latent = crosscoder.latents.iter().find(|l| l.index == index).unwrap();
    let top = latent.contexts.first().expect("contexts");
    let firing = &top.tokens[top.highlight];
    assert!(
        harness.query_all_by_label_contains(&format!("[{firing}]")).count() >= 1,
        "the strongest context with its firing token {firing:?}"
    );
}

#[test]
fn the_overview_names_the_tuned_only_latents() {
    let mut report = fixture("tiny-llama-full-ft.json");
    report.crosscoder = Some(crosscoder_section());
    let harness = harness(report);
    harness.get_by_label("5 tuned-only latents (8.3% of live), FVU base 0.1200 / tuned 0.1000");
}

#[test]
fn a_report_without_the_crosscoder_says_why_and_how_to_make_it() {
    let mut report = fixture("tiny-llama-lora.json");
    report.crosscoder = None;
    report
        .settings
        .methods
        .retain(|m| *m == mdiff_core::report::Method::Weights);
    report
        .skipped
        .retain(|s| s.method != mdiff_core::report::Method::Crosscoder);
    report.skipped.push(mdiff_core::report::SkippedSection {
        section: "crosscoder".into(),
        method: mdiff_core::report::Method::Crosscoder,
        reason: "trains a model: ask for it with --methods crosscoder".into(),
    });
    let mut harness = harness(report);
    assert!(
        harness.query_by_label_contains("tuned-only latents").is_none(),
        "no overview line"
    );
    open_tab(&mut harness, "Crosscoder");
    harness.get_by_label("No crosscoder section in this report");
    harness.get_by_label("Skipped: trains a model: ask for it with --methods crosscoder");
    harness.get_by_label("mdiff compare BASE TUNED --methods weights,crosscoder");
}

fn load_bytes(bytes: &[u8]) -> Harness<'static, ViewerApp> {
    let mut app = ViewerApp::empty();
    app.open_bytes("broken.json", bytes);
    harness_for(app)
}

#[test]
fn a_corrupt_report_shows_the_error_in_the_window() {
    let full = std::fs::read(fixture_path("tiny-llama-full-ft.json")).unwrap();
    let harness = load_bytes(&full[..full.len() / 2]);
    harness.get_by_label_contains("Could not open the report: broken.json: not an mdiff report");
    assert!(harness.state().state.document.is_none());
    // The welcome screen stays usable.
    harness.get_by_label("Open a report…");
}

#[test]
fn a_newer_schema_asks_for_an_upgrade() {
    let harness = load_bytes(br#"{"schema_version": "9.0", "anything": true}"#);
    harness.get_by_label_contains("upgrade mdiff");
    let harness = load_bytes(b"not json at all");
    harness.get_by_label_contains("bad JSON");
}

#[test]
fn a_bad_load_keeps_the_open_report() {
    let report = fixture("tiny-llama-full-ft.json");
    let mut app = ViewerApp::with_document(Document::new("good.json".into(), report));
    app.open_bytes("broken.json", b"{");
    let harness = harness_for(app);
    assert_eq!(harness.state().state.document.as_ref().unwrap().source, "good.json");
    harness.get_by_label_contains("Could not open the report: broken.json");
    harness.get_by_label("Dismiss");
}

mod snapshots {
    //! Rendered with wgpu on lavapipe; the images double as docs/viewer.md's screenshots.
    use super::*;

    /// The third prompt by KL (an English one) with its fifth token selected.
    fn show_a_token(harness: &mut Harness<'_, ViewerApp>) {
        for key in [
            Key::ArrowDown,
            Key::ArrowDown,
            Key::ArrowRight,
            Key::ArrowRight,
            Key::ArrowRight,
            Key::ArrowRight,
            Key::ArrowRight,
        ] {
            harness.key_press(key);
            harness.run();
        }
    }

    fn snapshot(harness: &mut Harness<'_, ViewerApp>, name: &str) {
        harness.run();
        harness.snapshot(name);
    }

    #[test]
    fn overview() {
        let mut harness = open_fixture("tiny-llama-lora.json");
        snapshot(&mut harness, "overview");
    }

    /// Every section: the four pictures drawn (docs/viewer.md's native screenshot is this image).
    #[test]
    fn overview_full() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        snapshot(&mut harness, "overview-full");
    }

    #[test]
    fn weights() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        open_tab(&mut harness, "Weights");
        harness.get_by_label_contains("layer 2 · mlp").click();
        harness.run();
        harness.get_by_label("model.layers.2.mlp.down_proj.weight").click();
        snapshot(&mut harness, "weights");
    }

    #[test]
    fn behaviour() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        open_tab(&mut harness, "Behaviour");
        show_a_token(&mut harness);
        snapshot(&mut harness, "behaviour");
    }

    #[test]
    fn lens() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        open_tab(&mut harness, "Logit lens");
        snapshot(&mut harness, "lens");
    }

    #[test]
    fn swap() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        open_tab(&mut harness, "Weight swap");
        snapshot(&mut harness, "swap");
    }

    #[test]
    fn patching() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        open_tab(&mut harness, "Patching");
        harness.get_by_label("mlp_out").click();
        snapshot(&mut harness, "patching");
    }

    #[test]
    fn crosscoder() {
        let mut harness = open_crosscoder();
        harness.get_by_label("#40").click();
        snapshot(&mut harness, "crosscoder");
    }

    #[test]
    fn behaviour_light() {
        let mut harness = open_fixture("tiny-llama-full-ft.json");
        harness.ctx.set_theme(egui::Theme::Light);
        open_tab(&mut harness, "Behaviour");
        show_a_token(&mut harness);
        snapshot(&mut harness, "behaviour-light");
    }

    #[test]
    fn error() {
        let mut harness = load_bytes(br#"{"schema_version": "9.0"}"#);
        snapshot(&mut harness, "error");
    }
}
