//! Training a crosscoder: the BatchTopK and L1 losses with their gradients written out (docs/methods.md, "The
//! crosscoder"), Adam, warm-up and decay, gradient clipping, and atomic checkpoints that a resumed run continues
//! bit for bit.
//!
//! The gradients are derived by hand rather than by autograd: with k of L latents active per row, every product
//! but the encoder's touches only the active rows (see [`super::kernels`]), which is what makes CPU training fast.
//! `train_tests.rs` checks them against finite differences.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::progress::{Progress, checkpoint};
use crate::rng::SplitMix64;

use super::activations::ActivationSet;
use super::dictionary::{
    CONFIG_FILE, CONFIG_FORMAT, Crosscoder, CrosscoderConfig, Sparsity, TrainedFor, WEIGHTS_FILE, decoder_norms,
    read_config, read_weights, write_config,
};
use super::kernels::{Sparse, accumulate_by_latent, check_width, encode_dense_into, entry_dots, sparse_times_rows};
use super::stream::RowStream;
use super::tensor_file::{Raw, Shape, TensorFile, write_safetensors};

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
/// Elements per task of the element-wise loops; fixed, so sums are grouped the same way on every machine.
const CHUNK: usize = 1 << 14;
/// Batches the final inference threshold is calibrated on.
const CALIBRATION_BATCHES: usize = 16;

/// The knobs of a run that are not read off the activations.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Number of latents.
    pub num_latents: usize,
    /// The sparsity mechanism.
    pub sparsity: Sparsity,
    /// Optimizer steps.
    pub steps: u64,
    /// Rows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Seed of the initialisation and the data order.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
}

impl TrainOptions {
    /// The full configuration of a run on `set`.
    #[must_use]
    pub fn config(&self, set: &ActivationSet) -> CrosscoderConfig {
        let m = set.manifest();
        CrosscoderConfig {
            format: CONFIG_FORMAT.into(),
            version: 1,
            hook: m.hook.clone(),
            d_model: m.d_model,
            num_latents: self.num_latents,
            sparsity: self.sparsity,
            steps: self.steps,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            warmup_steps: (self.steps / 20).min(1000),
            decay_fraction: 0.2,
            grad_clip: 1.0,
            init_decoder_norm: 0.1,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every.max(1),
            scale_base: m.base_norm.scale,
            scale_tuned: m.tuned_norm.scale,
        }
    }
}

/// Measures of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// The loss minimised (reconstruction + sparsity or auxiliary term).
    pub loss: f64,
    /// The auxiliary dead-latent loss before its weight (BatchTopK).
    pub aux_loss: f64,
    /// Fraction of the base half's batch variance left unexplained.
    pub fvu_base: f64,
    /// As `fvu_base`, for the tuned half.
    pub fvu_tuned: f64,
    /// Mean active latents per row.
    pub l0: f64,
    /// Share of latents that count as dead (BatchTopK: not fired for `dead_after_tokens` rows; L1: not fired in
    /// this batch).
    pub dead_fraction: f64,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// The trained dictionary.
    pub crosscoder: Crosscoder,
    /// Steps taken, over all resumptions.
    pub steps: u64,
    /// Steps taken by this call (0 when the run was already complete).
    pub steps_this_run: u64,
    /// Rows seen.
    pub tokens_seen: u64,
    /// The last step's measures.
    pub last: StepStats,
    /// Rows per second over this call's steps.
    pub tokens_per_second: f64,
}

/// Trains a crosscoder on `set` into the directory `out` (config, then checkpoints every
/// `config.checkpoint_every` steps and at the end).
///
/// With `resume`, continues the run in `out` from its last checkpoint: the config there must equal `config`
/// (every field but `checkpoint_every`); a run killed before its first checkpoint starts over.
///
/// # Errors
/// [`Error::Usage`] for a bad config, an `out` that holds files (without `resume`), or a resume whose config
/// differs (listing the fields); [`Error::InvalidCrosscoder`] for a corrupt checkpoint (nothing is overwritten);
/// [`Error::InvalidActivations`] for shards that do not fit; write failures.
pub fn train(
    set: &ActivationSet,
    config: &CrosscoderConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    progress: &dyn Progress,
) -> Result<TrainSummary> {
    config.check()?;
    let mut trainer = if resume {
        resume_from(set, config, out, device)?
    } else {
        if out.join(CONFIG_FILE).exists() || out.join(WEIGHTS_FILE).exists() {
            return Err(Error::Usage(format!(
                "{} already holds a crosscoder; pass --resume to continue it, or choose a new directory (nothing \
                 was changed)",
                out.display()
            )));
        }
        // The data is read (and checked) before anything is written, so a refused run leaves nothing behind.
        let trainer = Trainer::new(set, config.clone(), device)?;
        super::collect::prepare_dir(out)?;
        write_config(out, config)?;
        trainer
    };
    let first_step = trainer.step;
    let mut stream = RowStream::starting_at(set, config, trainer.tokens_seen)?;
    progress.begin("train", config.steps);
    progress.advance(first_step);
    let started = Instant::now();
    while trainer.step < config.steps {
        checkpoint(progress)?;
        let x = stream.next_batch(config.batch_size)?;
        trainer.step(&x)?;
        progress.advance(1);
        if trainer.step % 10 == 0 || trainer.step == config.steps {
            progress.status(&trainer.last.describe());
        }
        if trainer.step % config.checkpoint_every == 0 && trainer.step < config.steps {
            trainer.save(out)?;
        }
    }
    let steps_this_run = trainer.step - first_step;
    let seconds = started.elapsed().as_secs_f64();
    if steps_this_run > 0 {
        trainer.calibrate_threshold(&mut stream)?;
        trainer.save(out)?;
    }
    trainer.coder.trained = TrainedFor {
        steps: trainer.step,
        tokens_seen: trainer.tokens_seen,
        loss: trainer.last.loss,
    };
    progress.end();
    Ok(TrainSummary {
        steps: trainer.step,
        steps_this_run,
        tokens_seen: trainer.tokens_seen,
        last: trainer.last,
        tokens_per_second: if seconds > 0.0 {
            (steps_this_run * config.batch_size as u64) as f64 / seconds
        } else {
            0.0
        },
        crosscoder: trainer.coder,
    })
}

impl StepStats {
    /// One line for a progress bar.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "loss {:.4} · FVU base {:.3} tuned {:.3} · L0 {:.1} · dead {:.1}%",
            self.loss,
            self.fvu_base,
            self.fvu_tuned,
            self.l0,
            100.0 * self.dead_fraction
        )
    }
}

fn resume_from(set: &ActivationSet, config: &CrosscoderConfig, out: &Path, device: &Device) -> Result<Trainer> {
    if !out.join(CONFIG_FILE).exists() {
        return Err(Error::Usage(format!(
            "{} holds no {CONFIG_FILE}: there is no run to resume; start it without --resume",
            out.display()
        )));
    }
    // A kill during a checkpoint write leaves the atomic writer's temporary file; the checkpoint itself is whole.
    let _ = crate::report::atomic::remove_stale_temp_files(out);
    let saved = read_config(out)?;
    let diffs = saved.differences(config);
    if !diffs.is_empty() {
        return Err(Error::Usage(format!(
            "--resume: the run in {} was started with other settings ({}); repeat its flags, or train into a new \
             directory",
            out.display(),
            diffs.join("; ")
        )));
    }
    if !out.join(WEIGHTS_FILE).exists() {
        // Killed before its first checkpoint: there is nothing to lose by starting over.
        return Trainer::new(set, config.clone(), device);
    }
    let tensors = read_weights(&out.join(WEIGHTS_FILE))?;
    Trainer::from_checkpoint(config.clone(), &tensors, device)
}

/// The four parameter tensors, in a fixed order.
const PARAMS: [&str; 4] = ["encoder", "b_enc", "decoder", "b_dec"];

/// A run in progress: the dictionary, Adam's moments and the bookkeeping a resume needs.
struct Trainer {
    coder: Crosscoder,
    /// Adam's first and second moments, per parameter in [`PARAMS`] order.
    m: [Vec<f32>; 4],
    v: [Vec<f32>; 4],
    step: u64,
    tokens_seen: u64,
    /// Rows since each latent last fired.
    since_fired: Vec<u64>,
    last: StepStats,
    device: Device,
    buffers: Buffers,
}

/// Shapes of the parameters, in [`PARAMS`] order.
fn param_shapes(config: &CrosscoderConfig) -> [Vec<usize>; 4] {
    let (l, w) = (config.num_latents, config.width());
    [vec![l, w], vec![l], vec![l, w], vec![w]]
}

/// Gradients, per parameter in [`PARAMS`] order.
type Grads = [Vec<f32>; 4];

/// A step's largest buffers, kept from step to step for their allocations.
#[derive(Default)]
struct Buffers {
    pre: Vec<f32>,
    grads: Grads,
}

/// The loss of one batch and what a step needs of it.
struct Evaluation {
    grads: Grads,
    /// The pre-activations, kept for their allocation.
    pre: Vec<f32>,
    /// The active latents.
    f: Sparse,
    /// The smallest kept score (BatchTopK).
    cut: Option<f32>,
    stats: StepStats,
}

impl Trainer {
    fn new(set: &ActivationSet, config: CrosscoderConfig, device: &Device) -> Result<Self> {
        let (d, l, w) = (config.d_model, config.num_latents, config.width());
        let mut rng = SplitMix64::new(config.seed);
        let mut decoder = vec![0.0f32; l * w];
        for row in decoder.chunks_mut(d) {
            for v in row.iter_mut() {
                *v = rng.gaussian() as f32;
            }
            let norm = super::kernels::dot(row, row).sqrt().max(f32::MIN_POSITIVE);
            let scale = config.init_decoder_norm as f32 / norm;
            row.iter_mut().for_each(|v| *v *= scale);
        }
        // The decoder bias starts at the data mean, so the latents start by explaining deviations from it.
        let sample = usize::try_from(set.manifest().num_tokens.min(16_384)).unwrap_or(16_384);
        let rows = RowStream::starting_at(set, &config, 0)?.next_batch(sample)?;
        let mut b_dec = vec![0.0f64; w];
        for row in rows.chunks(w) {
            for (m, &v) in b_dec.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        let coder = Crosscoder {
            encoder: decoder.clone(),
            b_enc: vec![0.0; l],
            b_dec: b_dec.iter().map(|s| (s / sample as f64) as f32).collect(),
            decoder,
            threshold: -1.0,
            trained: TrainedFor::default(),
            config,
        };
        let shapes = param_shapes(&coder.config);
        let zeros = || shapes.clone().map(|shape| vec![0.0; shape.iter().product()]);
        Ok(Self {
            coder,
            m: zeros(),
            v: zeros(),
            step: 0,
            tokens_seen: 0,
            since_fired: vec![0; l],
            last: StepStats::default(),
            device: device.clone(),
            buffers: Buffers::default(),
        })
    }

    fn from_checkpoint(config: CrosscoderConfig, t: &TensorFile, device: &Device) -> Result<Self> {
        let l = config.num_latents;
        let shapes = param_shapes(&config);
        let moments = |which: &str| -> Result<[Vec<f32>; 4]> {
            let mut out: [Vec<f32>; 4] = Default::default();
            for (i, name) in PARAMS.iter().enumerate() {
                out[i] = t.finite_f32(&format!("adam.{which}.{name}"), Shape::Exactly(&shapes[i]))?;
            }
            Ok(out)
        };
        let coder = Crosscoder::from_tensors(config, t)?;
        Ok(Self {
            m: moments("m")?,
            v: moments("v")?,
            step: coder.trained.steps,
            tokens_seen: coder.trained.tokens_seen,
            since_fired: t.u64("state.since_fired", Shape::Exactly(&[l]))?,
            last: StepStats {
                loss: coder.trained.loss,
                ..StepStats::default()
            },
            coder,
            device: device.clone(),
            buffers: Buffers::default(),
        })
    }

    /// Writes weights, moments and counters to `out/crosscoder.safetensors`, atomically.
    fn save(&mut self, out: &Path) -> Result<()> {
        self.coder.trained = TrainedFor {
            steps: self.step,
            tokens_seen: self.tokens_seen,
            loss: self.last.loss,
        };
        let shapes = param_shapes(&self.coder.config);
        let mut tensors = self.coder.to_tensors();
        for (which, moments) in [("m", &self.m), ("v", &self.v)] {
            for (i, name) in PARAMS.iter().enumerate() {
                tensors.push((format!("adam.{which}.{name}"), Raw::f32(&moments[i], shapes[i].clone())));
            }
        }
        tensors.push(("state.since_fired".into(), Raw::u64(&self.since_fired)));
        write_safetensors(&out.join(WEIGHTS_FILE), &tensors)
    }

    /// One optimizer step on the batch `x` (`[B, 2·d_model]`, scaled).
    fn step(&mut self, x: &[f32]) -> Result<()> {
        let buffers = std::mem::take(&mut self.buffers);
        let mut eval = self.evaluate_with(x, None, buffers)?;
        let batch = (x.len() / self.coder.config.width()) as u64;
        self.tokens_seen += batch;
        for s in &mut self.since_fired {
            *s += batch;
        }
        for &l in &eval.f.latent {
            self.since_fired[l as usize] = 0;
        }
        if let (Sparsity::BatchTopK { threshold_beta, .. }, Some(t)) = (self.coder.config.sparsity, eval.cut) {
            let t = f64::from(t);
            self.coder.threshold = if self.coder.threshold < 0.0 {
                t
            } else {
                threshold_beta * self.coder.threshold + (1.0 - threshold_beta) * t
            };
        }
        self.clip(&mut eval.grads);
        self.adam(&eval.grads);
        self.step += 1;
        self.last = eval.stats;
        self.buffers = Buffers {
            pre: eval.pre,
            grads: eval.grads,
        };
        if !eval.stats.loss.is_finite() {
            return Err(Error::Usage(format!(
                "training diverged at step {} (loss {}); lower the learning rate",
                self.step, eval.stats.loss
            )));
        }
        Ok(())
    }

    /// The loss on `x` and its gradients, with the state as it is (nothing changes). `residual`, when given,
    /// replaces x − x̂ as the auxiliary loss's target: the loss treats it as a constant, and a finite-difference
    /// check has to hold it fixed too.
    #[cfg(test)]
    fn evaluate(&self, x: &[f32], residual: Option<&[f32]>) -> Result<Evaluation> {
        self.evaluate_with(x, residual, Buffers::default())
    }

    /// [`Self::evaluate`] in the allocations of `buffers`.
    fn evaluate_with(&self, x: &[f32], residual: Option<&[f32]>, buffers: Buffers) -> Result<Evaluation> {
        let config = &self.coder.config;
        let width = config.width();
        check_width(width, &[x])?;
        let batch = x.len() / width;
        let Buffers { pre, mut grads } = buffers;
        let pre = self.pre_activations(x, pre)?;
        let (nb, nt) = decoder_norms(&self.coder.decoder, config.d_model);
        let norms: Vec<f32> = nb.iter().zip(&nt).map(|(a, b)| a + b).collect();
        let (f, cut) = match config.sparsity {
            Sparsity::BatchTopK { k, .. } => {
                let (f, t) = batch_top_k(&pre, &norms, k * batch);
                (f, Some(t))
            }
            Sparsity::L1 { .. } => (positive(&pre, config.num_latents), None),
        };
        let mut fired = vec![false; config.num_latents];
        f.latent.iter().for_each(|&l| fired[l as usize] = true);

        // Reconstruction and its error e = x̂ − x; the loss is Σ‖e‖²/B, so ∂/∂x̂ = 2e/B.
        let mut x_hat: Vec<f32> = self.coder.b_dec.iter().copied().cycle().take(x.len()).collect();
        sparse_times_rows(&f, &self.coder.decoder, width, &mut x_hat);
        let e: Vec<f32> = x_hat.iter().zip(x).map(|(a, b)| a - b).collect();
        let (sse_base, sse_tuned) = half_sums(&e, config.d_model, |v| v * v);
        let (var_base, var_tuned) = half_variances(x, config.d_model);
        let mut loss = (sse_base + sse_tuned) / batch as f64;
        let g: Vec<f32> = e.iter().map(|v| v * (2.0 / batch as f32)).collect();

        let lengths = [
            self.coder.encoder.len(),
            self.coder.b_enc.len(),
            self.coder.decoder.len(),
            0,
        ];
        for (grad, len) in grads.iter_mut().zip(lengths) {
            grad.clear();
            grad.resize(len, 0.0);
        }
        grads[3] = column_sums(&g, width);
        accumulate_by_latent(&f, &g, width, &mut grads[2]);
        let mut dpre = entry_dots(&f, &g, &self.coder.decoder, width);
        let mut aux_loss = 0.0;
        let dead: Vec<bool> = match config.sparsity {
            Sparsity::BatchTopK {
                aux_alpha,
                k_aux,
                dead_after_tokens,
                ..
            } => {
                // Dead after this batch: what the step's bookkeeping will record.
                let dead: Vec<bool> = self
                    .since_fired
                    .iter()
                    .zip(&fired)
                    .map(|(&s, &fired)| !fired && s + batch as u64 >= dead_after_tokens)
                    .collect();
                let n_dead = dead.iter().filter(|&&d| d).count();
                if n_dead > 0 && aux_alpha > 0.0 {
                    let residual: Vec<f32> = residual.map_or_else(|| e.iter().map(|v| -v).collect(), <[f32]>::to_vec);
                    aux_loss = self.aux_gradients(x, &residual, &pre, &dead, k_aux.min(n_dead), aux_alpha, &mut grads);
                    loss += aux_alpha * aux_loss;
                }
                dead
            }
            Sparsity::L1 {
                coefficient,
                ramp_fraction,
            } => {
                let ramp = (ramp_fraction * config.steps as f64).max(1.0);
                let lambda = coefficient * (self.step as f64 / ramp).min(1.0);
                loss += self.l1_gradients(&f, &mut dpre, &nb, &nt, &norms, lambda, batch, &mut grads);
                fired.iter().map(|&x| !x).collect()
            }
        };
        let dpre = f.with_values(dpre);
        accumulate_by_latent(&dpre, x, width, &mut grads[0]);
        for (e, &l) in dpre.latent.iter().enumerate() {
            grads[1][l as usize] += dpre.value[e];
        }
        let stats = StepStats {
            loss,
            aux_loss,
            fvu_base: ratio(sse_base, var_base),
            fvu_tuned: ratio(sse_tuned, var_tuned),
            l0: f.nnz() as f64 / batch as f64,
            dead_fraction: dead.iter().filter(|&&d| d).count() as f64 / config.num_latents as f64,
        };
        Ok(Evaluation {
            grads,
            pre,
            f,
            cut,
            stats,
        })
    }

    /// ReLU-free pre-activations x·W_encᵀ + b_enc, `[B, L]`, in the allocation of `pre`.
    fn pre_activations(&self, x: &[f32], mut pre: Vec<f32>) -> Result<Vec<f32>> {
        let width = self.coder.config.width();
        encode_dense_into(&mut pre, x, &self.coder.encoder, width, &self.device)?;
        let latents = self.coder.config.num_latents;
        pre.par_chunks_mut(latents).for_each(|row| {
            for (p, &b) in row.iter_mut().zip(&self.coder.b_enc) {
                *p += b;
            }
        });
        Ok(pre)
    }

    /// The auxiliary loss of BatchTopK (Gao et al. 2024): the k_aux most active dead latents of each row
    /// reconstruct the residual x − x̂, normalised by the residual's variance. Adds its gradients (weighted by
    /// `alpha`) and returns the loss before the weight.
    #[allow(clippy::too_many_arguments, reason = "the step's intermediate buffers, borrowed")]
    fn aux_gradients(
        &self,
        x: &[f32],
        residual: &[f32],
        pre: &[f32],
        dead: &[bool],
        k_aux: usize,
        alpha: f64,
        grads: &mut Grads,
    ) -> f64 {
        let width = self.coder.config.width();
        let latents = self.coder.config.num_latents;
        let batch = x.len() / width;
        // Only the dead latents' columns are read: usually a few of L.
        let dead_latents: Vec<u32> = (0..latents as u32).filter(|&l| dead[l as usize]).collect();
        let rows: Vec<Vec<(u32, f32)>> = pre
            .par_chunks(latents)
            .map(|row| {
                let mut cand: Vec<(u32, f32)> = dead_latents
                    .iter()
                    .filter_map(|&l| {
                        let p = row[l as usize];
                        (p > 0.0).then_some((l, p))
                    })
                    .collect();
                if cand.len() > k_aux {
                    cand.select_nth_unstable_by(k_aux - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    cand.truncate(k_aux);
                }
                cand.sort_unstable_by_key(|c| c.0);
                cand
            })
            .collect();
        let f_aux = Sparse::from_rows(rows);
        if f_aux.nnz() == 0 {
            return 0.0;
        }
        // The residual r = x − x̂ is a constant here: the auxiliary loss trains only the dead latents.
        let mut e_aux = vec![0.0f32; x.len()];
        sparse_times_rows(&f_aux, &self.coder.decoder, width, &mut e_aux);
        e_aux.iter_mut().zip(residual).for_each(|(a, &r)| *a -= r);
        let (s_base, s_tuned) = half_sums(&e_aux, self.coder.config.d_model, |v| v * v);
        let l2 = (s_base + s_tuned) / batch as f64;
        let (v_base, v_tuned) = half_variances(residual, self.coder.config.d_model);
        let denom = (v_base + v_tuned) / batch as f64;
        if !(denom > 0.0 && denom.is_finite()) {
            return 0.0;
        }
        let aux = l2 / denom;
        let scale = (2.0 * alpha / (batch as f64 * denom)) as f32;
        let g: Vec<f32> = e_aux.iter().map(|v| v * scale).collect();
        accumulate_by_latent(&f_aux, &g, width, &mut grads[2]);
        let d = entry_dots(&f_aux, &g, &self.coder.decoder, width);
        let d = f_aux.with_values(d);
        accumulate_by_latent(&d, x, width, &mut grads[0]);
        for (i, &l) in d.latent.iter().enumerate() {
            grads[1][l as usize] += d.value[i];
        }
        aux
    }

    /// The L1 penalty λ Σ_b Σ_i f_bi (‖d_i^base‖ + ‖d_i^tuned‖) / B: adds its gradient to `dpre` (at the active
    /// entries) and to the decoder (through the norms), and returns its value.
    #[allow(clippy::too_many_arguments, reason = "the step's intermediate buffers, borrowed")]
    fn l1_gradients(
        &self,
        f: &Sparse,
        dpre: &mut [f32],
        nb: &[f32],
        nt: &[f32],
        norms: &[f32],
        lambda: f64,
        batch: usize,
        grads: &mut Grads,
    ) -> f64 {
        let d = self.coder.config.d_model;
        let c = (lambda / batch as f64) as f32;
        let mut per_latent = vec![0.0f64; self.coder.config.num_latents];
        for (i, &l) in f.latent.iter().enumerate() {
            per_latent[l as usize] += f64::from(f.value[i]);
            dpre[i] += c * norms[l as usize];
        }
        let penalty: f64 = per_latent.iter().zip(norms).map(|(s, &n)| s * f64::from(n)).sum();
        // ∂‖v‖/∂v = v/‖v‖, per half.
        grads[2]
            .par_chunks_mut(2 * d)
            .zip(self.coder.decoder.par_chunks(2 * d))
            .enumerate()
            .for_each(|(l, (g, row))| {
                let s = c * per_latent[l] as f32;
                if s == 0.0 {
                    return;
                }
                for (half, norm) in [(0..d, nb[l]), (d..2 * d, nt[l])] {
                    if norm > 0.0 {
                        for j in half {
                            g[j] += s * row[j] / norm;
                        }
                    }
                }
            });
        lambda * penalty / batch as f64
    }

    /// Scales the gradients down to a global norm of `grad_clip`.
    fn clip(&self, grads: &mut Grads) {
        let sq: f64 = grads.iter().map(|g| chunked_sum(g, |v| v * v)).sum();
        let norm = sq.sqrt();
        let clip = self.coder.config.grad_clip;
        if norm > clip {
            let s = (clip / norm) as f32;
            for g in grads.iter_mut() {
                g.par_iter_mut().for_each(|v| *v *= s);
            }
        }
    }

    /// Learning rate at the current step: linear warm-up, flat, linear decay to 0 over the last `decay_fraction`.
    fn learning_rate(&self) -> f64 {
        let c = &self.coder.config;
        let t = self.step as f64;
        let warm = ((t + 1.0) / c.warmup_steps.max(1) as f64).min(1.0);
        let decay_len = c.decay_fraction * c.steps as f64;
        let decay = if decay_len > 0.0 {
            ((c.steps as f64 - t) / decay_len).min(1.0)
        } else {
            1.0
        };
        c.learning_rate * warm * decay
    }

    fn adam(&mut self, grads: &Grads) {
        let t = (self.step + 1) as i32;
        let lr = self.learning_rate();
        let (c1, c2) = (1.0 - ADAM_BETA1.powi(t), 1.0 - ADAM_BETA2.powi(t));
        let step_size = (lr / c1) as f32;
        let c2_sqrt = c2.sqrt() as f32;
        let (b1, b2, eps) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32, ADAM_EPS as f32);
        let params: [&mut Vec<f32>; 4] = [
            &mut self.coder.encoder,
            &mut self.coder.b_enc,
            &mut self.coder.decoder,
            &mut self.coder.b_dec,
        ];
        for (i, p) in params.into_iter().enumerate() {
            p.par_chunks_mut(CHUNK)
                .zip(self.m[i].par_chunks_mut(CHUNK))
                .zip(self.v[i].par_chunks_mut(CHUNK))
                .zip(grads[i].par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for j in 0..p.len() {
                        m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                        v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                        p[j] -= step_size * m[j] / (v[j].sqrt() / c2_sqrt + eps);
                    }
                });
        }
    }

    /// Sets the inference threshold to the mean, over batches after training, of the smallest score BatchTopK
    /// keeps: the running average lags the weights in short runs (docs/methods.md).
    fn calibrate_threshold(&mut self, stream: &mut RowStream<'_>) -> Result<()> {
        let Sparsity::BatchTopK { k, .. } = self.coder.config.sparsity else {
            return Ok(());
        };
        let batch = self.coder.config.batch_size;
        let (nb, nt) = self.coder.decoder_norms();
        let norms: Vec<f32> = nb.iter().zip(&nt).map(|(a, b)| a + b).collect();
        let mut sum = 0.0;
        for _ in 0..CALIBRATION_BATCHES {
            let x = stream.next_batch(batch)?;
            let buffer = std::mem::take(&mut self.buffers.pre);
            let pre = self.pre_activations(&x, buffer)?;
            sum += f64::from(batch_top_k(&pre, &norms, k * batch).1);
            self.buffers.pre = pre;
        }
        self.coder.threshold = sum / CALIBRATION_BATCHES as f64;
        Ok(())
    }
}

/// BatchTopK: the entries of `pre` (`[B, L]`) whose scores ReLU(pre)·norm are among the `keep` largest of the
/// batch (ties at the cut all kept), with their ReLU values, and the smallest kept score.
pub(crate) fn batch_top_k(pre: &[f32], norms: &[f32], keep: usize) -> (Sparse, f32) {
    let latents = norms.len();
    let per_row = keep.div_ceil(pre.len() / latents.max(1)).max(1);
    // The union of every row's top `per_row` holds at least `keep` scores, so the batch's cut is at least the
    // smallest of them: only scores above that bound need the global selection.
    // (A row with fewer positives contributes all of them; if the union is still short, every positive score
    // is a candidate.)
    let row_cut: Vec<(f32, usize)> = pre
        .par_chunks(latents)
        .map(|row| {
            let mut s: Vec<f32> = row
                .iter()
                .zip(norms)
                .filter(|&(&p, _)| p > 0.0)
                .map(|(&p, &n)| p * n)
                .collect();
            if s.len() > per_row {
                s.select_nth_unstable_by(per_row - 1, |a, b| b.total_cmp(a));
                (s[per_row - 1], per_row)
            } else {
                let n = s.len();
                (s.into_iter().fold(f32::INFINITY, f32::min), n)
            }
        })
        .collect();
    let union: usize = row_cut.iter().map(|c| c.1).sum();
    let bound = if union >= keep {
        row_cut.iter().map(|c| c.0).fold(f32::INFINITY, f32::min)
    } else {
        0.0
    };
    // Every entry the batch keeps scores at least the bound, so the candidates hold the kept entries too.
    let candidates: Vec<Vec<(u32, f32, f32)>> = pre
        .par_chunks(latents)
        .map(|row| {
            row.iter()
                .zip(norms)
                .enumerate()
                .filter_map(|(l, (&p, &n))| (p > 0.0 && p * n >= bound).then_some((l as u32, p, p * n)))
                .collect()
        })
        .collect();
    let mut scores: Vec<f32> = candidates.iter().flatten().map(|c| c.2).collect();
    let cut = if scores.len() > keep {
        let (_, c, _) = scores.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a));
        *c
    } else {
        scores.iter().copied().fold(f32::INFINITY, f32::min)
    };
    let rows: Vec<Vec<(u32, f32)>> = candidates
        .into_par_iter()
        .map(|row| row.into_iter().filter(|c| c.2 >= cut).map(|c| (c.0, c.1)).collect())
        .collect();
    (Sparse::from_rows(rows), if cut.is_finite() { cut } else { 0.0 })
}

/// Every positive entry of `pre` (`[B, L]`): the ReLU, for L1.
fn positive(pre: &[f32], latents: usize) -> Sparse {
    let rows = pre
        .par_chunks(latents)
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|&(_, &p)| p > 0.0)
                .map(|(l, &p)| (l as u32, p))
                .collect()
        })
        .collect();
    Sparse::from_rows(rows)
}

/// Σ of `f(v)` over `values`, in f64, grouped in fixed chunks so the rounding is the same on every run.
fn chunked_sum(values: &[f32], f: impl Fn(f64) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| f(f64::from(v))).sum())
        .collect();
    parts.iter().sum()
}

/// Σ f(v) over the base halves and the tuned halves of `[n, 2d]` rows.
pub(crate) fn half_sums(rows: &[f32], d: usize, f: impl Fn(f64) -> f64 + Sync) -> (f64, f64) {
    let parts: Vec<(f64, f64)> = rows
        .par_chunks(2 * d)
        .map(|r| {
            let (a, b) = r.split_at(d);
            (
                a.iter().map(|&v| f(f64::from(v))).sum(),
                b.iter().map(|&v| f(f64::from(v))).sum(),
            )
        })
        .collect();
    parts.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b))
}

/// Σ_b ‖x_b − x̄‖² of each half of `[n, 2d]` rows.
pub(crate) fn half_variances(rows: &[f32], d: usize) -> (f64, f64) {
    let width = 2 * d;
    let n = (rows.len() / width).max(1) as f64;
    let mut mean = vec![0.0f64; width];
    for row in rows.chunks(width) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let parts: Vec<(f64, f64)> = rows
        .par_chunks(width)
        .map(|r| {
            let sq = |range: std::ops::Range<usize>| range.map(|j| (f64::from(r[j]) - mean[j]).powi(2)).sum::<f64>();
            (sq(0..d), sq(d..width))
        })
        .collect();
    parts.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b))
}

/// Σ over rows of `[n, width]`, per column.
fn column_sums(rows: &[f32], width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; width];
    for row in rows.chunks(width) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// a / b, or 0 for an empty denominator.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
