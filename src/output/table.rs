//! The one table type: a header and rows of cells, rendered to the terminal (box drawing),
//! markdown (both through comfy-table), CSV (the csv crate) or HTML (escaped, with optional
//! classes for styling).

use crate::error::Result;

/// A cell: its text and, for HTML, an optional class.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    pub class: Option<&'static str>,
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Cell {
            text: text.into(),
            class: None,
        }
    }
}

impl Cell {
    pub fn with_class(text: impl Into<String>, class: &'static str) -> Self {
        Cell {
            text: text.into(),
            class: Some(class),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
    /// The HTML table's class.
    class: Option<&'static str>,
    /// In HTML, the first cell of each row is a row header (`<th>`).
    row_headers: bool,
}

impl Table {
    /// A table with these column titles (none: a table without a header row).
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            ..Table::default()
        }
    }

    /// The HTML table's class.
    pub fn class(mut self, class: &'static str) -> Self {
        self.class = Some(class);
        self
    }

    /// In HTML, the first cell of each row is a `<th>`.
    pub fn row_headers(mut self) -> Self {
        self.row_headers = true;
        self
    }

    pub fn row<C: Into<Cell>>(&mut self, cells: impl IntoIterator<Item = C>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    fn comfy(&self, preset: &str, escape_pipes: bool) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        t.load_preset(preset);
        let text = |c: &str| {
            if escape_pipes {
                c.replace('|', "\\|")
            } else {
                c.to_string()
            }
        };
        if !self.header.is_empty() {
            t.set_header(self.header.iter().map(|h| text(h)));
        }
        for r in &self.rows {
            t.add_row(r.iter().map(|c| text(&c.text)));
        }
        t
    }

    /// Box drawing for a terminal.
    pub fn terminal(&self) -> String {
        self.comfy(comfy_table::presets::UTF8_FULL_CONDENSED, false)
            .to_string()
    }

    /// A markdown table ('|' in cells escaped).
    pub fn markdown(&self) -> String {
        self.comfy(comfy_table::presets::ASCII_MARKDOWN, true)
            .to_string()
    }

    /// CSV: the header, then a record per row.
    pub fn csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        if !self.header.is_empty() {
            w.write_record(&self.header)?;
        }
        for r in &self.rows {
            w.write_record(r.iter().map(|c| &c.text))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// An HTML table, every text escaped.
    pub fn html(&self) -> String {
        let mut s = match self.class {
            Some(c) => format!("<table class=\"{c}\">\n"),
            None => "<table>\n".to_string(),
        };
        if !self.header.is_empty() {
            s.push_str("<tr>");
            for h in &self.header {
                s.push_str(&format!("<th>{}</th>", escape(h)));
            }
            s.push_str("</tr>\n");
        }
        for r in &self.rows {
            s.push_str("<tr>");
            for (i, c) in r.iter().enumerate() {
                let tag = if i == 0 && self.row_headers {
                    "th"
                } else {
                    "td"
                };
                match c.class {
                    Some(class) => s.push_str(&format!(
                        "<{tag} class=\"{class}\">{}</{tag}>",
                        escape(&c.text)
                    )),
                    None => s.push_str(&format!("<{tag}>{}</{tag}>", escape(&c.text))),
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        s
    }

    /// The table in a text format: terminal, markdown or CSV. (JSON is the caller's to write:
    /// a table is a view of data that serializes itself; asked for JSON, this gives the
    /// terminal form.)
    pub fn render(&self, format: super::Format) -> Result<String> {
        Ok(match format {
            super::Format::Md => self.markdown(),
            super::Format::Csv => self.csv()?,
            super::Format::Table | super::Format::Json => self.terminal(),
        })
    }
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(["case", "value"]);
        t.row(["a|b", "1 < 2"]);
        t.row([Cell::from("c"), Cell::with_class("3", "measured")]);
        t
    }

    #[test]
    fn one_table_four_renderings() {
        let t = table();
        let md = t.markdown();
        assert!(md.starts_with("| case ") && md.contains(r"a\|b"), "{md}");
        assert!(t.terminal().contains("a|b") && t.terminal().contains('┆'));
        assert_eq!(t.csv().unwrap(), "case,value\na|b,1 < 2\nc,3\n");
        assert_eq!(
            t.clone().class("fit").row_headers().html(),
            "<table class=\"fit\">\n<tr><th>case</th><th>value</th></tr>\n\
             <tr><th>a|b</th><td>1 &lt; 2</td></tr>\n<tr><th>c</th><td class=\"measured\">3</td></tr>\n</table>\n"
        );
        let mut bare = Table::new(Vec::<String>::new());
        bare.row(["k", "v"]);
        assert_eq!(
            bare.html(),
            "<table>\n<tr><td>k</td><td>v</td></tr>\n</table>\n"
        );
    }
}
