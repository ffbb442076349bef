//! The logit lens on planted ground truth (only layer 2 of the tiny Llama full fine-tune changed; the LoRA adapter
//! touches q_proj/v_proj of every layer) and against transformers' output at the last layer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use mdiff_tests::{Sandbox, fixture};
use serde_json::Value;

fn compare(sb: &Sandbox, tuned: &str, extra: &[&str]) -> Value {
    let out = sb.join(&format!("{}.json", tuned.replace('/', "-")));
    let (base, tuned) = (fixture("tiny-llama/base"), fixture(tuned));
    let prompts = fixture("prompts/golden.txt");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "compare".as_ref(),
        base.as_os_str(),
        tuned.as_os_str(),
        "--methods".as_ref(),
        "kl,lens".as_ref(),
        "--prompts".as_ref(),
        prompts.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    sb.mdiff(&args).assert_ok();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn mean_drift(point: &Value) -> f64 {
    point["drift"]["mean"].as_f64().unwrap()
}

#[test]
fn drift_is_zero_before_the_changed_layer_and_rises_at_it() {
    let sb = Sandbox::new();
    let report = compare(&sb, "tiny-llama/full-ft", &[]);
    let lens = &report["lens"];
    let points = lens["points"].as_array().unwrap();
    let hooks: Vec<&str> = points.iter().map(|p| p["hook"].as_str().unwrap()).collect();
    assert_eq!(
        hooks,
        [
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_post",
            "blocks.1.hook_resid_post",
            "blocks.2.hook_resid_post",
            "blocks.3.hook_resid_post"
        ]
    );
    assert!(lens["num_positions"].as_u64().unwrap() > 10);
    // Embedding and layers 0-1 are bit-identical in both models: the drift is exactly 0 and the tops agree.
    for p in &points[..3] {
        assert_eq!(mean_drift(p), 0.0, "{p}");
        assert_eq!(p["drift"]["max"].as_f64().unwrap(), 0.0, "{p}");
        assert_eq!(p["top1_agreement"].as_f64().unwrap(), 1.0, "{p}");
    }
    assert!(mean_drift(&points[3]) > 0.5, "layer 2 changed: {}", points[3]);
    assert_eq!(lens["onset"], 3, "the drift begins at layer 2");
    for p in points {
        // Final norm and unembedding are unchanged, so the whole drift is carried by the residual stream.
        let residual = p["residual_drift"].as_f64().unwrap();
        assert!((residual - mean_drift(p)).abs() <= 1e-9 * mean_drift(p).max(1.0), "{p}");
    }
    // The last point is each model's output: nothing left to move, and its drift is the behaviour KL.
    let last = points.last().unwrap();
    assert_eq!(last["base_to_final"].as_f64().unwrap(), 0.0);
    assert_eq!(last["tuned_to_final"].as_f64().unwrap(), 0.0);
    // Earlier points are further from the output (the lens sharpens with depth on this model).
    assert!(points[0]["base_to_final"].as_f64().unwrap() > points[2]["base_to_final"].as_f64().unwrap());
    let used = lens["num_prompts"].as_u64().unwrap() as usize;
    let kl: Vec<f64> = report["behaviour"]["prompts"].as_array().unwrap()[..used]
        .iter()
        .flat_map(|p| {
            p["kl_tuned_base"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let behaviour_mean = kl.iter().sum::<f64>() / kl.len() as f64;
    assert_eq!(last["drift"]["n"].as_u64().unwrap() as usize, kl.len());
    assert!(
        (mean_drift(last) - behaviour_mean).abs() <= 1e-6 * behaviour_mean,
        "lens at the last layer {} vs behaviour {behaviour_mean}",
        mean_drift(last)
    );
}

#[test]
fn top_positions_list_both_models_tops_at_every_point() {
    let sb = Sandbox::new();
    let report = compare(&sb, "tiny-llama/full-ft", &[]);
    let lens = &report["lens"];
    let n_points = lens["points"].as_array().unwrap().len();
    let top = lens["top_positions"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let kls: Vec<f64> = top.iter().map(|p| p["kl_tuned_base"].as_f64().unwrap()).collect();
    assert!(kls.windows(2).all(|w| w[0] >= w[1]), "largest first: {kls:?}");
    // The most divergent position agrees with the behaviour section's (same prompts, same logits).
    let behaviour_top = &report["behaviour"]["top_positions"][0];
    assert_eq!(top[0]["prompt"], behaviour_top["prompt"]);
    assert_eq!(top[0]["position"], behaviour_top["position"]);
    for p in top {
        for key in ["top_base", "top_tuned"] {
            let per_point = p[key].as_array().unwrap();
            assert_eq!(per_point.len(), n_points);
            assert!(per_point.iter().all(|t| t.as_array().unwrap().len() == 5));
        }
        // Identical below layer 2; the last point's lists are the models' outputs, as the behaviour section has them.
        for i in 0..3 {
            assert_eq!(p["top_base"][i], p["top_tuned"][i]);
        }
        if p["prompt"] == behaviour_top["prompt"] && p["position"] == behaviour_top["position"] {
            for (ours, theirs) in [("top_base", "top_base"), ("top_tuned", "top_tuned")] {
                let ids = |v: &Value| -> Vec<u64> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["id"].as_u64().unwrap())
                        .collect()
                };
                assert_eq!(ids(&p[ours][n_points - 1]), ids(&behaviour_top[theirs]));
            }
        }
    }
}

#[test]
fn a_lora_on_every_layer_drifts_from_the_first_block() {
    let sb = Sandbox::new();
    let report = compare(&sb, "tiny-llama/lora", &["--lens-positions", "64"]);
    let lens = &report["lens"];
    let points = lens["points"].as_array().unwrap();
    assert_eq!(mean_drift(&points[0]), 0.0, "the embedding is not adapted");
    assert!(mean_drift(&points[1]) > 0.0, "q_proj/v_proj of layer 0 changed");
    // --lens-positions caps the prompts read (whole prompts; at least one).
    let used = lens["num_prompts"].as_u64().unwrap() as usize;
    let lengths: Vec<usize> = report["behaviour"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tokens"].as_array().unwrap().len())
        .collect();
    assert!(used >= 1);
    assert!(lengths[..used].iter().sum::<usize>() <= 64 || used == 1);
    assert!(lengths[..=used].iter().sum::<usize>() > 64);
    assert_eq!(lens["max_positions"], 64);
    // A budget of no positions is a usage error, as clap reports them.
    let zero = sb.mdiff(&["compare", "a", "b", "--lens-positions", "0"]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
    assert!(
        zero.stderr.contains("--lens-positions") && zero.stderr.contains("'0' is not valid"),
        "{}",
        zero.stderr
    );
}
