//! A row × layer grid of a section's items that carry a share per direction (the swap's parts, the patching's
//! cells), with the grid as one viridis image per direction: what the swap and patching views share.

use super::HeatmapImage;
use crate::colors::{MISSING, Scale};

/// A direction in which a section measures a share of the divergence per item (swap: removed or introduced;
/// patching: tuned → base or base → tuned).
pub trait ShareDirection: Copy + PartialEq + 'static {
    /// What carries one share per direction: a swap row, a patch cell.
    type Item;

    /// Every direction, in display order.
    const ALL: [Self; 2];

    /// The share of an item in this direction.
    fn share(self, item: &Self::Item) -> Option<f64>;

    /// Short label (table columns, selectors, hover text).
    fn label(self) -> &'static str;

    /// What the direction does, for headings.
    fn title(self) -> &'static str;
}

/// Items placed on a row × layer grid, and the grid as an image per direction.
pub struct LayerGrid<D> {
    /// Columns: transformer blocks 0..num_layers.
    pub num_layers: usize,
    /// Row names, top to bottom.
    pub rows: Vec<String>,
    /// Index into the section's items per (row, layer), row-major; `None` where no item sits.
    cells: Vec<Option<usize>>,
    /// Per direction, in [`ShareDirection::ALL`] order, its share per cell on viridis over 0..1.
    images: Vec<(D, HeatmapImage)>,
}

impl<D: ShareDirection> LayerGrid<D> {
    /// Places items on the grid: `placed` gives (item index, row name, layer) for each item that has a cell; the
    /// grid is as wide as the deepest layer placed, and an item whose row is not in `rows` is left out.
    #[must_use]
    pub fn new<R: AsRef<str>>(
        items: &[D::Item],
        rows: Vec<String>,
        placed: impl IntoIterator<Item = (usize, R, usize)>,
    ) -> Self {
        let placed: Vec<(usize, R, usize)> = placed.into_iter().collect();
        let num_layers = placed.iter().map(|(_, _, layer)| layer + 1).max().unwrap_or(0);
        let mut cells = vec![None; rows.len() * num_layers];
        for (i, row, layer) in &placed {
            if let Some(r) = rows.iter().position(|name| name == row.as_ref())
                && let Some(cell) = cells.get_mut(r * num_layers + layer)
            {
                *cell = Some(*i);
            }
        }
        let images = D::ALL
            .into_iter()
            .map(|direction| {
                let pixels = cells
                    .iter()
                    .map(|c| {
                        c.and_then(|i| items.get(i))
                            .and_then(|item| direction.share(item))
                            .map_or(MISSING, |v| Scale::Viridis.at(v))
                    })
                    .collect();
                (direction, HeatmapImage::new(num_layers, rows.len(), pixels))
            })
            .collect();
        Self {
            num_layers,
            rows,
            cells,
            images,
        }
    }

    /// The index of the item at (row, layer), when one sits there.
    #[must_use]
    pub fn cell(&self, row: usize, layer: usize) -> Option<usize> {
        if layer >= self.num_layers {
            return None;
        }
        self.cells.get(row * self.num_layers + layer).copied().flatten()
    }

    /// The item at (row, layer) of `items`, the slice the grid was made from.
    #[must_use]
    pub fn item<'a>(&self, items: &'a [D::Item], row: usize, layer: usize) -> Option<&'a D::Item> {
        self.cell(row, layer).and_then(|i| items.get(i))
    }

    /// The heatmap of a direction.
    pub fn image_mut(&mut self, direction: D) -> Option<&mut HeatmapImage> {
        self.images
            .iter_mut()
            .find(|(d, _)| *d == direction)
            .map(|(_, image)| image)
    }
}

/// Item indices by share in `direction`, largest first; items without a share last, ties in item order.
#[must_use]
pub fn by_share<D: ShareDirection>(items: &[D::Item], direction: D) -> Vec<usize> {
    let key = |i: usize| {
        items
            .get(i)
            .and_then(|item| direction.share(item))
            .unwrap_or(f64::NEG_INFINITY)
    };
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order
}
