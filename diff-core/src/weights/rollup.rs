//! Roll-ups of per-tensor norms per layer, per component and per (layer, component) cell.

use std::collections::BTreeMap;

use crate::report::{Component, ComponentRollup, LayerComponentRollup, LayerRollup, RollupStats, TensorDiff};

/// Squared norms add across tensors; roots are taken at the end.
#[derive(Default, Clone, Copy)]
struct Acc {
    num_tensors: usize,
    num_changed: usize,
    base_sq: f64,
    delta_sq: f64,
}

impl Acc {
    fn add(&mut self, t: &TensorDiff) {
        self.num_tensors += 1;
        self.num_changed += usize::from(t.num_changed > 0);
        self.base_sq += t.base_norm * t.base_norm;
        self.delta_sq += t.delta_norm * t.delta_norm;
    }

    fn stats(self) -> RollupStats {
        RollupStats {
            num_tensors: self.num_tensors,
            num_changed: self.num_changed,
            base_norm: self.base_sq.sqrt(),
            delta_norm: self.delta_sq.sqrt(),
            relative: if self.base_sq > 0.0 {
                (self.delta_sq / self.base_sq).sqrt()
            } else {
                0.0
            },
        }
    }
}

/// Per-layer, per-component and per-cell roll-ups, each sorted by key.
#[must_use]
pub fn rollups(tensors: &[TensorDiff]) -> (Vec<LayerRollup>, Vec<ComponentRollup>, Vec<LayerComponentRollup>) {
    let mut layers: BTreeMap<usize, Acc> = BTreeMap::new();
    let mut components: BTreeMap<Component, Acc> = BTreeMap::new();
    let mut cells: BTreeMap<(usize, Component), Acc> = BTreeMap::new();
    for t in tensors {
        components.entry(t.component).or_default().add(t);
        if let Some(layer) = t.layer {
            layers.entry(layer).or_default().add(t);
            cells.entry((layer, t.component)).or_default().add(t);
        }
    }
    (
        layers
            .into_iter()
            .map(|(layer, acc)| LayerRollup {
                layer,
                stats: acc.stats(),
            })
            .collect(),
        components
            .into_iter()
            .map(|(component, acc)| ComponentRollup {
                component,
                stats: acc.stats(),
            })
            .collect(),
        cells
            .into_iter()
            .map(|((layer, component), acc)| LayerComponentRollup {
                layer,
                component,
                stats: acc.stats(),
            })
            .collect(),
    )
}
