//! The licences a Debian package declares, from its machine-readable
//! copyright file (`/usr/share/doc/PACKAGE/copyright`, the DEP-5 format),
//! as an SPDX licence expression.
//!
//! Every `License:` of a `Files:` paragraph applies to some of the
//! package's files, so the package's declared licence is their conjunction
//! (`AND`). Within one field, DEP-5's `or` and `and` become `OR` and `AND`
//! (`and` binding tighter, a comma ending a group). A Debian short name
//! becomes an SPDX identifier only where the two name the same licence
//! ([`SPDX_OF`]: DEP-5's standard names and SPDX identifiers Debian uses
//! as they are); any other name, and every `with ... exception`, becomes a
//! `LicenseRef-Debian-...` that the document declares, never a guess. A
//! copyright file that is not machine-readable declares nothing the SBOM
//! can state (`NOASSERTION`).

use std::collections::BTreeSet;

use super::dpkg::{stanza_fields, stanzas};

/// Debian licence short names (lowercased) and the SPDX identifier of the
/// same licence. DEP-5's `GPL-2+` is "version 2 or later"; `Artistic` is the
/// Perl Artistic Licence of `/usr/share/common-licenses/Artistic`; `Expat`
/// is SPDX's `MIT`. Names without a version (`GPL`, `LGPL`, `BSD`) and
/// DEP-5's `Perl` (a pair of licences) are left out on purpose.
pub const SPDX_OF: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("afl-2.1", "AFL-2.1"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("apache-1.0", "Apache-1.0"),
    ("apache-1.1", "Apache-1.1"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1.0", "Artistic-1.0"),
    ("artistic-1.0-perl", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("beerware", "Beerware"),
    ("bsd-1-clause", "BSD-1-Clause"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("bzip2-1.0.6", "bzip2-1.0.6"),
    ("cc-by-3.0", "CC-BY-3.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cddl-1.0", "CDDL-1.0"),
    ("curl", "curl"),
    ("epl-1.0", "EPL-1.0"),
    ("epl-2.0", "EPL-2.0"),
    ("expat", "MIT"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("gfdl-1.1", "GFDL-1.1-only"),
    ("gfdl-1.1+", "GFDL-1.1-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-1.0", "GPL-1.0-only"),
    ("gpl-1.0+", "GPL-1.0-or-later"),
    ("gpl-1.0-or-later", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-2.0-only", "GPL-2.0-only"),
    ("gpl-2.0-or-later", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gpl-3.0-only", "GPL-3.0-only"),
    ("gpl-3.0-or-later", "GPL-3.0-or-later"),
    ("hpnd", "HPND"),
    ("ijg", "IJG"),
    ("isc", "ISC"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.0", "LGPL-2.0-only"),
    ("lgpl-2.0+", "LGPL-2.0-or-later"),
    ("lgpl-2.0-or-later", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-2.1-only", "LGPL-2.1-only"),
    ("lgpl-2.1-or-later", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("lgpl-3.0", "LGPL-3.0-only"),
    ("lgpl-3.0+", "LGPL-3.0-or-later"),
    ("lgpl-3.0-only", "LGPL-3.0-only"),
    ("lgpl-3.0-or-later", "LGPL-3.0-or-later"),
    ("libpng", "Libpng"),
    ("lppl-1.3c", "LPPL-1.3c"),
    ("mit", "MIT"),
    ("mit-0", "MIT-0"),
    ("mit-cmu", "MIT-CMU"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("ms-pl", "MS-PL"),
    ("ntp", "NTP"),
    ("ofl-1.1", "OFL-1.1"),
    ("openssl", "OpenSSL"),
    ("psf-2", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("qpl-1.0", "QPL-1.0"),
    ("ruby", "Ruby"),
    ("sleepycat", "Sleepycat"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("unlicense", "Unlicense"),
    ("w3c", "W3C"),
    ("wtfpl", "WTFPL"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
    ("zpl-2.1", "ZPL-2.1"),
];

/// The prefix of the licence references this module makes.
pub const REF_PREFIX: &str = "LicenseRef-Debian-";

/// A licence expression, before it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Expr {
    /// An SPDX identifier or a `LicenseRef-`.
    Id(String),
    And(BTreeSet<Expr>),
    Or(BTreeSet<Expr>),
}

impl Expr {
    /// `items` joined by AND (`and` true) or OR: nested joins of the same
    /// kind flattened, duplicates dropped, one item alone unwrapped.
    fn join(and: bool, items: impl IntoIterator<Item = Expr>) -> Option<Expr> {
        let mut set = BTreeSet::new();
        for e in items {
            match (and, e) {
                (true, Expr::And(inner)) | (false, Expr::Or(inner)) => set.extend(inner),
                (_, e) => {
                    set.insert(e);
                }
            }
        }
        match set.len() {
            0 => None,
            1 => set.into_iter().next(),
            _ if and => Some(Expr::And(set)),
            _ => Some(Expr::Or(set)),
        }
    }

    fn render(&self, nested: bool) -> String {
        let (items, op) = match self {
            Expr::Id(id) => return id.clone(),
            Expr::And(s) => (s, " AND "),
            Expr::Or(s) => (s, " OR "),
        };
        let inner: Vec<String> = items.iter().map(|e| e.render(true)).collect();
        let joined = inner.join(op);
        if nested {
            format!("({joined})")
        } else {
            joined
        }
    }
}

/// What a package's copyright file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The SPDX licence expression.
    pub expression: String,
    /// The `LicenseRef-`s it uses, with the Debian name each stands for.
    pub refs: Vec<(String, String)>,
}

/// The SPDX identifier of a Debian short name, or the licence reference
/// made of it.
pub fn spdx_id(name: &str) -> (String, bool) {
    let lower = name.trim().to_ascii_lowercase();
    match SPDX_OF.iter().find(|(d, _)| *d == lower) {
        Some((_, id)) => (id.to_string(), false),
        None => (license_ref(&lower), true),
    }
}

/// `LicenseRef-Debian-` and the name in the characters SPDX allows in an
/// identifier (letters, digits, `.` and `-`): `+` spelled `plus`, every run
/// of other characters one `-`.
fn license_ref(lower: &str) -> String {
    let mut id = String::new();
    for c in lower.chars() {
        let piece = match c {
            'a'..='z' | '0'..='9' | '.' => c.to_string(),
            '+' => "-plus-".to_string(),
            _ => "-".to_string(),
        };
        for p in piece.chars() {
            if !(p == '-' && (id.is_empty() || id.ends_with('-'))) {
                id.push(p);
            }
        }
    }
    let id = id.trim_end_matches('-');
    format!("{REF_PREFIX}{}", if id.is_empty() { "unnamed" } else { id })
}

/// One `License:` first line as an expression, with the references it
/// makes: groups separated by commas (`A or B, and C` is `(A OR B) AND
/// C`), `or` (or `and/or`) between alternatives, `and` binding tighter.
fn field(line: &str, refs: &mut Vec<(String, String)>) -> Option<Expr> {
    let mut result: Option<Expr> = None;
    for (i, group) in line.split(',').enumerate() {
        let words: Vec<&str> = group.split_whitespace().collect();
        let (and, words) = match words.first().map(|w| w.to_ascii_lowercase()) {
            Some(w) if i > 0 && w == "or" => (false, &words[1..]),
            Some(w) if i > 0 && w == "and" => (true, &words[1..]),
            _ => (true, &words[..]),
        };
        let Some(e) = alternatives(words, refs) else {
            continue;
        };
        result = match result {
            None => Some(e),
            Some(prev) => Expr::join(and, [prev, e]),
        };
    }
    result
}

fn alternatives(words: &[&str], refs: &mut Vec<(String, String)>) -> Option<Expr> {
    let is = |w: &str, op: &str| w.eq_ignore_ascii_case(op);
    let alts = words.split(|w| is(w, "or") || is(w, "and/or"));
    let exprs: Vec<Expr> = alts
        .filter_map(|alt| {
            let terms = alt.split(|w| is(w, "and")).filter_map(|term| {
                let name = term.join(" ");
                if name.is_empty() {
                    return None;
                }
                let (id, is_ref) = spdx_id(&name);
                if is_ref {
                    refs.push((id.clone(), name));
                }
                Some(Expr::Id(id))
            });
            Expr::join(true, terms)
        })
        .collect();
    Expr::join(false, exprs)
}

/// The licence a machine-readable copyright file declares for its package:
/// the conjunction of its `Files:` paragraphs' licences (of the header's
/// `License:` when no `Files:` paragraph has one). `None` when the file is
/// not machine-readable (no `Format:` in its first paragraph) or declares
/// no licence.
pub fn declared(text: &str) -> Option<Declared> {
    let paragraphs = stanzas(text);
    let header = stanza_fields(paragraphs.first()?);
    if !header.iter().any(|(n, _)| n == "format") {
        return None;
    }
    let first_line = |fields: &[(String, String)]| {
        fields
            .iter()
            .find(|(n, _)| n == "license")
            .map(|(_, v)| v.lines().next().unwrap_or_default().trim().to_string())
            .filter(|l| !l.is_empty())
    };
    let mut lines: Vec<String> = paragraphs
        .iter()
        .skip(1)
        .map(|p| stanza_fields(p))
        .filter(|f| f.iter().any(|(n, _)| n == "files"))
        .filter_map(|f| first_line(&f))
        .collect();
    if lines.is_empty() {
        lines.extend(first_line(&header));
    }
    let mut refs = Vec::new();
    let exprs: Vec<Expr> = lines.iter().filter_map(|l| field(l, &mut refs)).collect();
    let expression = Expr::join(true, exprs)?.render(false);
    refs.sort();
    refs.dedup_by(|a, b| a.0 == b.0);
    // Only the references the final expression still uses.
    refs.retain(|(id, _)| expression.split([' ', '(', ')']).any(|t| t == id));
    Some(Declared { expression, refs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(line: &str) -> String {
        let mut refs = Vec::new();
        field(line, &mut refs).unwrap().render(false)
    }

    #[test]
    fn dep5_expressions_become_spdx_expressions() {
        for (debian, spdx) in [
            ("GPL-2+", "GPL-2.0-or-later"),
            (
                "GPL-1+ or Artistic",
                "Artistic-1.0-Perl OR GPL-1.0-or-later",
            ),
            ("LGPL-3+ or GPL-2+", "GPL-2.0-or-later OR LGPL-3.0-or-later"),
            ("BSD-3-clause and BSD-3-Clause", "BSD-3-Clause"),
            (
                "GPL-2+ or AFL-2.1, and Expat and Tcl-BSDish",
                "LicenseRef-Debian-tcl-bsdish AND MIT AND (AFL-2.1 OR GPL-2.0-or-later)",
            ),
            (
                "REGCOMP, and GPL-1+ or Artistic",
                "LicenseRef-Debian-regcomp AND (Artistic-1.0-Perl OR GPL-1.0-or-later)",
            ),
            ("ISC and/or LGPL-2.1+", "ISC OR LGPL-2.1-or-later"),
            (
                "GPL-2+ with OpenSSL exception",
                "LicenseRef-Debian-gpl-2-plus-with-openssl-exception",
            ),
            (
                "A and B or C",
                "LicenseRef-Debian-c OR (LicenseRef-Debian-a AND LicenseRef-Debian-b)",
            ),
            ("public-domain", "LicenseRef-Debian-public-domain"),
            (
                "LGPLv3+_or_GPLv2+",
                "LicenseRef-Debian-lgplv3-plus-or-gplv2-plus",
            ),
        ] {
            assert_eq!(expr(debian), spdx, "{debian}");
        }
    }

    #[test]
    fn a_package_declares_every_files_paragraph_s_licence() {
        let copyright = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: jq
Source: https://github.com/jqlang/jq

Files: *
Copyright: 2012 Stephen Dolan
License: Expat

Files: src/decNumber/*
Copyright: 2000 IBM
License: ICU

Files: debian/*
Copyright: 2013 Simon Elsbrock
License: GPL-2+ or Expat

License: ICU
 Permission is hereby granted ...

License: GPL-2+
 This program is free software ...
";
        let d = declared(copyright).unwrap();
        assert_eq!(
            d.expression,
            "LicenseRef-Debian-icu AND MIT AND (GPL-2.0-or-later OR MIT)"
        );
        assert_eq!(
            d.refs,
            [("LicenseRef-Debian-icu".to_string(), "ICU".to_string())]
        );
        // Not machine-readable: nothing to declare.
        assert_eq!(
            declared("This is jq, written by Stephen Dolan.\n\nLicense: MIT\n"),
            None
        );
        // A header licence alone.
        let d = declared("Format: x\nLicense: Zlib\n").unwrap();
        assert_eq!(d.expression, "Zlib");
    }

    #[test]
    fn references_use_only_the_characters_spdx_allows() {
        for (name, id) in [
            (
                "BSD-3-clause-GENERIC",
                "LicenseRef-Debian-bsd-3-clause-generic",
            ),
            ("MIT/X11", "LicenseRef-Debian-mit-x11"),
            ("  ", "LicenseRef-Debian-unnamed"),
            (
                "GPL-3+-WITH-BISON-EXCEPTION",
                "LicenseRef-Debian-gpl-3-plus-with-bison-exception",
            ),
        ] {
            assert_eq!(spdx_id(name), (id.to_string(), true), "{name}");
        }
        assert_eq!(spdx_id("Expat"), ("MIT".to_string(), false));
    }
}
