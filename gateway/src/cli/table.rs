//! Tables whose columns line up, however long their cells: each column is as wide as its
//! widest cell (counted in characters), numbers aligned right.

use std::fmt;

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn numeric(cell: &str) -> bool {
    !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit() || "/.-".contains(c)) && cell != "-"
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.headers.len();
        let width = |i: usize| {
            std::iter::once(&self.headers[i])
                .chain(self.rows.iter().filter_map(|r| r.get(i)))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        // A column is right-aligned when every cell of it is a number.
        let right: Vec<bool> = (0..columns)
            .map(|i| {
                let mut cells = self.rows.iter().filter_map(|r| r.get(i)).peekable();
                cells.peek().is_some() && cells.all(|c| numeric(c) || c == "-")
            })
            .collect();
        for cells in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                if right[i] {
                    line.push_str(&format!("{cell:>w$}"));
                } else {
                    line.push_str(&format!("{cell:<w$}"));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cells() {
        let mut t = Table::new(&["ID", "SOURCE", "ATT"]);
        t.row(vec!["evt_1".into(), "a-very-long-source-name".into(), "3".into()]);
        t.row(vec!["evt_22".into(), "s".into(), "12".into()]);
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID      SOURCE                   ATT");
        assert_eq!(lines[1], "evt_1   a-very-long-source-name    3");
        assert_eq!(lines[2], "evt_22  s                         12");
    }
}
