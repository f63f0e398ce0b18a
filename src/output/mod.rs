//! How things look to a person: one table type rendered to the terminal, markdown, CSV and HTML
//! (`table.rs`), progress bars (`progress.rs`), and the text of outcomes and warnings
//! (`outcome.rs`, `warnings.rs`). Units and their formatting are in `crate::units`.

pub mod outcome;
pub mod progress;
pub mod table;
pub mod warnings;

/// What a command prints: a table for the terminal, markdown (a pull-request comment, a
/// report), CSV, or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
}
