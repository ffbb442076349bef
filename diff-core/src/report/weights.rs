//! The `weights` section: per-tensor ΔW statistics and their roll-ups per layer and component.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Weight differences between base and tuned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WeightsSection {
    /// How singular values were computed.
    pub spectrum_settings: SpectrumSettings,
    /// Totals over all diffed tensors.
    pub totals: WeightTotals,
    /// One entry per paired tensor, sorted by name.
    pub tensors: Vec<TensorDiff>,
    /// Roll-up per transformer block, sorted by layer index.
    pub layers: Vec<LayerRollup>,
    /// Roll-up per component kind over the whole model.
    pub components: Vec<ComponentRollup>,
    /// Roll-up per (layer, component) cell: the heatmap.
    pub layer_components: Vec<LayerComponentRollup>,
    /// Tensors only the base has.
    pub unmatched_base: Vec<String>,
    /// Tensors only the tuned model has.
    pub unmatched_tuned: Vec<String>,
    /// Paired names whose shapes differ (not diffed).
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// Paired names whose dtypes differ (diffed after conversion to f32).
    pub dtype_mismatches: Vec<DtypeMismatch>,
    /// Paired tensors not diffed because their dtype is not a float we read (integers, FP8, ...).
    pub skipped_tensors: Vec<SkippedTensor>,
}

/// Parameters of the singular value estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpectrumSettings {
    /// Number of leading singular values kept per matrix.
    pub top_k: usize,
    /// Extra random directions beyond `top_k` in the randomized range finder.
    pub oversample: usize,
    /// Power (subspace) iterations of the randomized range finder.
    pub power_iterations: usize,
    /// Matrices with min(m,n)²·max(m,n) up to this are decomposed exactly (one-sided Jacobi in f64).
    pub exact_max_work: u64,
    /// A singular value counts towards `effective_rank` when σ_i > `rank_tolerance`·σ₁.
    pub rank_tolerance: f64,
    /// Seed of the random test matrices (each tensor derives its own from this and its name).
    pub seed: u64,
}

/// Totals over every diffed tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WeightTotals {
    /// Tensors diffed.
    pub num_tensors: usize,
    /// Tensors with at least one changed entry.
    pub num_changed: usize,
    /// Scalars diffed.
    pub num_parameters: u64,
    /// Scalars that changed (|Δ| > 0).
    pub num_changed_parameters: u64,
    /// √Σ‖W_base‖²_F over all tensors.
    pub base_norm: f64,
    /// √Σ‖ΔW‖²_F over all tensors.
    pub delta_norm: f64,
    /// `delta_norm / base_norm` (0 when the base is all zeros).
    pub relative: f64,
}

/// Where a tensor sits in the model, parsed from its Hugging Face name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Token or position embeddings.
    Embed,
    /// Attention projections.
    Attn,
    /// Feed-forward (MLP) weights.
    Mlp,
    /// Normalization scales and biases.
    Norm,
    /// The unembedding.
    LmHead,
    /// Anything else.
    Other,
}

impl Component {
    /// Every component, in display order.
    pub const ALL: [Self; 6] = [
        Self::Embed,
        Self::Attn,
        Self::Mlp,
        Self::Norm,
        Self::LmHead,
        Self::Other,
    ];

    /// Short name as used in the report and tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Embed => "embed",
            Self::Attn => "attn",
            Self::Mlp => "mlp",
            Self::Norm => "norm",
            Self::LmHead => "lm_head",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Statistics of ΔW = W_tuned − W_base for one tensor.
///
/// Entries where either side is NaN or ±Inf are left out of every statistic and counted in `non_finite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TensorDiff {
    /// Canonical name (known prefixes stripped).
    pub name: String,
    /// Name in the base checkpoint.
    pub base_name: String,
    /// Name in the tuned checkpoint.
    pub tuned_name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Base dtype.
    pub dtype_base: String,
    /// Tuned dtype.
    pub dtype_tuned: String,
    /// Transformer block index, when the name has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Component kind.
    pub component: Component,
    /// Number of entries.
    pub num_elements: u64,
    /// ‖W_base‖_F.
    pub base_norm: f64,
    /// ‖W_tuned‖_F.
    pub tuned_norm: f64,
    /// ‖ΔW‖_F.
    pub delta_norm: f64,
    /// ‖ΔW‖_F / ‖W_base‖_F (absent when the base is all zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    /// ⟨W_base, W_tuned⟩ / (‖W_base‖_F‖W_tuned‖_F) (absent when either is all zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f64>,
    /// max |Δ|.
    pub max_abs_delta: f64,
    /// mean |Δ|.
    pub mean_abs_delta: f64,
    /// Entries with |Δ| > 0.
    pub num_changed: u64,
    /// Fraction of entries with |Δ| > 0.
    pub changed_fraction: f64,
    /// Fraction of entries with |Δ| > 1e-6 · max|W_base|.
    pub changed_fraction_tol: f64,
    /// NaN/Inf counts on each side.
    pub non_finite: NonFinite,
    /// Leading singular values of ΔW (2-D tensors that changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectrum: Option<Spectrum>,
}

/// NaN and ±Inf counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct NonFinite {
    /// NaNs in the base tensor.
    pub base_nan: u64,
    /// ±Infs in the base tensor.
    pub base_inf: u64,
    /// NaNs in the tuned tensor.
    pub tuned_nan: u64,
    /// ±Infs in the tuned tensor.
    pub tuned_inf: u64,
}

impl NonFinite {
    /// Whether any entry on either side is non-finite.
    #[must_use]
    pub fn any(&self) -> bool {
        self.base_nan + self.base_inf + self.tuned_nan + self.tuned_inf > 0
    }
}

/// Leading singular values of ΔW and the rank measures derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Spectrum {
    /// σ₁ ≥ σ₂ ≥ … (at most `top_k`).
    pub singular_values: Vec<f64>,
    /// ‖ΔW‖²_F / σ₁²: ≈ the number of directions the change spreads over; ≤ r for a rank-r update.
    pub stable_rank: f64,
    /// Number of σ_i > `rank_tolerance`·σ₁ among the leading `top_k + 1` (one more than listed), so a rank up to
    /// `top_k` is exact and `top_k + 1` means "more than `top_k`". Before schema 1.6, capped at `top_k`, which meant
    /// "at least".
    pub effective_rank: usize,
    /// Whether the values are exact (Jacobi SVD) or a randomized estimate.
    pub exact: bool,
}

/// Norms summed over a group of tensors.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RollupStats {
    /// Tensors in the group.
    pub num_tensors: usize,
    /// Tensors that changed.
    pub num_changed: usize,
    /// √Σ‖W_base‖²_F.
    pub base_norm: f64,
    /// √Σ‖ΔW‖²_F.
    pub delta_norm: f64,
    /// `delta_norm / base_norm` (0 when the base is all zeros).
    pub relative: f64,
}

/// Roll-up over the tensors of one transformer block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerRollup {
    /// Block index.
    pub layer: usize,
    /// Summed norms.
    #[serde(flatten)]
    pub stats: RollupStats,
}

/// Roll-up over one component kind across the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentRollup {
    /// Component kind.
    pub component: Component,
    /// Summed norms.
    #[serde(flatten)]
    pub stats: RollupStats,
}

/// Roll-up over one (layer, component) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerComponentRollup {
    /// Block index.
    pub layer: usize,
    /// Component kind.
    pub component: Component,
    /// Summed norms.
    #[serde(flatten)]
    pub stats: RollupStats,
}

/// A paired name whose shapes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShapeMismatch {
    /// Canonical name.
    pub name: String,
    /// Base shape.
    pub base: Vec<usize>,
    /// Tuned shape.
    pub tuned: Vec<usize>,
}

/// A paired name whose dtypes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DtypeMismatch {
    /// Canonical name.
    pub name: String,
    /// Base dtype.
    pub base: String,
    /// Tuned dtype.
    pub tuned: String,
}

/// A paired tensor that was not diffed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedTensor {
    /// Canonical name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}
