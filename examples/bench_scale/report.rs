//! The results tables (markdown).

use super::*;

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<(String, BTreeMap<String, String>)>,
}

impl Table {
    pub(crate) fn set(&mut self, row: &str, col: &str, value: String) {
        if !self.columns.iter().any(|c| c == col) {
            self.columns.push(col.to_string());
        }
        match self.rows.iter_mut().find(|(r, _)| r == row) {
            Some((_, cells)) => {
                cells.insert(col.to_string(), value);
            }
            None => self
                .rows
                .push((row.to_string(), [(col.to_string(), value)].into())),
        }
    }

    pub(crate) fn markdown(&self) -> String {
        let mut s = format!("| figure | {} |\n", self.columns.join(" | "));
        s += &format!("|---|{}\n", "---:|".repeat(self.columns.len()));
        for (row, cells) in &self.rows {
            let line: Vec<String> = self
                .columns
                .iter()
                .map(|c| cells.get(c).cloned().unwrap_or_else(|| "–".into()))
                .collect();
            s += &format!("| {row} | {} |\n", line.join(" | "));
        }
        s
    }
}

pub(crate) fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

pub(crate) struct Report {
    pub(crate) groups: Table,
    pub(crate) scale: Table,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn note(&mut self, s: String) {
        eprintln!("bench_scale: {s}");
        self.notes.push(s);
    }
}
