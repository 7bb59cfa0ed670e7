//! A small structured HCL writer whose output is already in `packer fmt`
//! style: values are escaped by construction, never concatenated into text.

use std::fmt::Write;

/// An HCL expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A string taken literally: quotes, backslashes, `${` and `%{` are
    /// escaped so that HCL yields exactly these characters.
    Str(String),
    /// A string with interpolations.
    Template(Vec<Part>),
    /// A reference or function call written as is (`var.stage_dir`). Only
    /// for expressions imagectl itself writes, never for user input.
    Raw(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A list, written on one line.
    List(Vec<Expr>),
    /// An object, one key per line (`{}` when empty).
    Map(Vec<(String, Expr)>),
}

/// One piece of a [`Expr::Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text, escaped.
    Lit(String),
    /// An interpolated expression, written inside `${...}`.
    Interp(String),
}

impl Expr {
    /// A literal string.
    pub fn str(s: impl Into<String>) -> Expr {
        Expr::Str(s.into())
    }

    /// A list of literal strings.
    pub fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Expr {
        Expr::List(
            items
                .into_iter()
                .map(|s| Expr::Str(s.as_ref().to_string()))
                .collect(),
        )
    }

    fn is_multiline(&self) -> bool {
        matches!(self, Expr::Map(items) if !items.is_empty())
    }
}

/// A block: `type "label" "label" { body }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Block type (`source`, `build`, `provisioner`).
    pub kind: String,
    /// Labels, written quoted.
    pub labels: Vec<String>,
    /// Its content.
    pub body: Body,
}

/// One line-level item of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `name = value`.
    Attr(String, Expr),
    /// A nested block.
    Block(Block),
    /// An empty line.
    Blank,
    /// A `#` comment on its own line.
    Comment(String),
}

/// The content of a file or a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// Items in order.
    pub items: Vec<Item>,
}

impl Body {
    /// An empty body.
    pub fn new() -> Body {
        Body::default()
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &str, value: Expr) -> Body {
        self.items.push(Item::Attr(name.to_string(), value));
        self
    }

    /// Adds an attribute when there is a value.
    pub fn attr_opt(self, name: &str, value: Option<Expr>) -> Body {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Adds a block.
    pub fn block(mut self, kind: &str, labels: &[&str], body: Body) -> Body {
        self.items.push(Item::Block(Block {
            kind: kind.to_string(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            body,
        }));
        self
    }

    /// Adds a comment.
    pub fn comment(mut self, text: &str) -> Body {
        self.items.push(Item::Comment(text.to_string()));
        self
    }

    /// Adds an empty line.
    pub fn blank(mut self) -> Body {
        self.items.push(Item::Blank);
        self
    }

    /// Removes, at any depth, every attribute and block named in `names`.
    pub fn without(&self, names: &[&str]) -> Body {
        let mut items = Vec::new();
        for item in &self.items {
            match item {
                Item::Attr(n, _) if names.contains(&n.as_str()) => continue,
                Item::Block(b) if names.contains(&b.kind.as_str()) => continue,
                Item::Block(b) => items.push(Item::Block(Block {
                    body: b.body.without(names),
                    ..b.clone()
                })),
                other => items.push(other.clone()),
            }
        }
        // Collapse runs of blank lines and trailing blanks a removal left.
        let mut out: Vec<Item> = Vec::new();
        for item in items {
            if item == Item::Blank && matches!(out.last(), None | Some(Item::Blank)) {
                continue;
            }
            out.push(item);
        }
        while out.last() == Some(&Item::Blank) {
            out.pop();
        }
        Body { items: out }
    }

    /// Applies `f` to the body of every top-level block of type `kind`.
    pub fn map_blocks(&self, kind: &str, f: impl Fn(&Body) -> Body) -> Body {
        let items = self
            .items
            .iter()
            .map(|item| match item {
                Item::Block(b) if b.kind == kind => Item::Block(Block {
                    body: f(&b.body),
                    ..b.clone()
                }),
                other => other.clone(),
            })
            .collect();
        Body { items }
    }

    /// Every attribute and block name used, at any depth.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for item in &self.items {
            match item {
                Item::Attr(n, _) => out.push(n.clone()),
                Item::Block(b) => {
                    out.push(b.kind.clone());
                    out.extend(b.body.names());
                }
                Item::Blank | Item::Comment(_) => {}
            }
        }
        out
    }
}

/// Renders a file body.
pub fn render(body: &Body) -> String {
    let mut out = String::new();
    write_body(&mut out, body, 0);
    out
}

fn indent(out: &mut String, level: usize) {
    out.push_str(&"  ".repeat(level));
}

fn write_body(out: &mut String, body: &Body, level: usize) {
    // `packer fmt` aligns the `=` of consecutive single-line attributes; a
    // block, a blank line or a multi-line value ends the run.
    let items = &body.items;
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Item::Attr(_, value) if !value.is_multiline() => {
                let start = i;
                while i < items.len() && matches!(&items[i], Item::Attr(_, v) if !v.is_multiline())
                {
                    i += 1;
                }
                let width = items[start..i]
                    .iter()
                    .map(|it| match it {
                        Item::Attr(n, _) => n.chars().count(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                for it in &items[start..i] {
                    if let Item::Attr(n, v) = it {
                        indent(out, level);
                        let _ = write!(out, "{n:<width$} = ");
                        write_expr(out, v, level);
                        out.push('\n');
                    }
                }
                continue;
            }
            Item::Attr(name, value) => {
                indent(out, level);
                let _ = write!(out, "{name} = ");
                write_expr(out, value, level);
                out.push('\n');
            }
            Item::Block(b) => {
                indent(out, level);
                out.push_str(&b.kind);
                for l in &b.labels {
                    out.push(' ');
                    out.push_str(&quote(l));
                }
                if b.body.items.is_empty() {
                    out.push_str(" {\n");
                } else {
                    out.push_str(" {\n");
                    write_body(out, &b.body, level + 1);
                }
                indent(out, level);
                out.push_str("}\n");
            }
            Item::Blank => out.push('\n'),
            Item::Comment(text) => {
                for line in text.lines() {
                    indent(out, level);
                    out.push_str(format!("# {line}").trim_end());
                    out.push('\n');
                }
            }
        }
        i += 1;
    }
}

fn write_expr(out: &mut String, e: &Expr, level: usize) {
    match e {
        Expr::Str(s) => out.push_str(&quote(s)),
        Expr::Template(parts) => {
            out.push('"');
            for p in parts {
                match p {
                    Part::Lit(s) => out.push_str(&escape(s)),
                    Part::Interp(x) => {
                        let _ = write!(out, "${{{x}}}");
                    }
                }
            }
            out.push('"');
        }
        Expr::Raw(s) => out.push_str(s),
        Expr::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Expr::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Expr::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, x, level);
            }
            out.push(']');
        }
        Expr::Map(items) if items.is_empty() => out.push_str("{}"),
        Expr::Map(items) => {
            out.push_str("{\n");
            let keys: Vec<String> = items.iter().map(|(k, _)| map_key(k)).collect();
            let width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
            for (k, (_, v)) in keys.iter().zip(items) {
                indent(out, level + 1);
                let _ = write!(out, "{k:<width$} = ");
                write_expr(out, v, level + 1);
                out.push('\n');
            }
            indent(out, level);
            out.push('}');
        }
    }
}

fn map_key(k: &str) -> String {
    let ident = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ident {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A quoted HCL string that evaluates to exactly `s`.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `${` and `%{` start interpolations and directives: doubling
            // the sigil is HCL's escape for the literal text.
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_hcl_would_interpret() {
        assert_eq!(
            quote(r#"a "b" \c ${d} %{e} $f %g"#),
            r#""a \"b\" \\c $${d} %%{e} $f %g""#
        );
        assert_eq!(quote("x\ny\tz\u{1}"), r#""x\ny\tz\u0001""#);
        assert_eq!(quote("café ✓"), "\"café ✓\"");
    }

    #[test]
    fn aligns_like_packer_fmt() {
        let body = Body::new().block(
            "source",
            &["amazon-ebs", "x"],
            Body::new()
                .attr("a", Expr::Int(1))
                .attr("bbbb", Expr::Int(2))
                .attr(
                    "cc",
                    Expr::Map(vec![
                        ("k".into(), Expr::str("v")),
                        ("longer:key".into(), Expr::str("v")),
                    ]),
                )
                .attr("d", Expr::Int(3))
                .attr("eeeeee", Expr::Map(vec![]))
                .attr("f", Expr::strs(["a", "b"]))
                .block(
                    "nested",
                    &[],
                    Body::new()
                        .attr("z", Expr::Bool(true))
                        .attr("zzzz", Expr::Raw("var.x".into())),
                )
                .attr(
                    "i",
                    Expr::Template(vec![Part::Lit("a-".into()), Part::Interp("var.h".into())]),
                ),
        );
        assert_eq!(
            render(&body),
            r#"source "amazon-ebs" "x" {
  a    = 1
  bbbb = 2
  cc = {
    k            = "v"
    "longer:key" = "v"
  }
  d      = 3
  eeeeee = {}
  f      = ["a", "b"]
  nested {
    z    = true
    zzzz = var.x
  }
  i = "a-${var.h}"
}
"#
        );
    }

    #[test]
    fn without_removes_at_any_depth() {
        let body = Body::new()
            .block(
                "packer",
                &[],
                Body::new().block("required_plugins", &[], Body::new()),
            )
            .blank()
            .block(
                "source",
                &["a", "b"],
                Body::new()
                    .attr("keep", Expr::Int(1))
                    .attr("imds_support", Expr::str("v2.0")),
            );
        let reduced = body.without(&["required_plugins", "imds_support"]);
        assert_eq!(
            render(&reduced),
            "packer {\n}\n\nsource \"a\" \"b\" {\n  keep = 1\n}\n"
        );
        assert!(!reduced.names().contains(&"imds_support".to_string()));
    }
}
