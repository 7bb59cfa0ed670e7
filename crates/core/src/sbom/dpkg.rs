//! The installed packages of a root filesystem, from dpkg's database
//! (`var/lib/dpkg/status`): deb822 stanzas, of which only the packages
//! dpkg calls installed count (not those removed with their configuration
//! files left).

/// Where dpkg keeps its database, relative to the root.
pub const STATUS: &str = "var/lib/dpkg/status";

/// One installed binary package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture` (`amd64`, `all`).
    pub arch: String,
    /// The source package's name: `Source`, else the package's own.
    pub source: String,
    /// The source package's version: the one `Source` gives in
    /// parentheses, else the package's own.
    pub source_version: String,
}

/// The fields of one deb822 stanza, names lowercased, continuation lines
/// joined with `\n`.
pub fn stanza_fields(stanza: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in stanza.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if line.starts_with('#') {
            continue;
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    fields
}

/// The stanzas of a deb822 text: blocks separated by blank lines.
pub fn stanzas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The installed packages of a `status` file, sorted by name and
/// architecture.
pub fn installed(status: &str) -> Vec<Installed> {
    let mut out: Vec<Installed> = stanzas(status)
        .iter()
        .filter_map(|s| {
            let fields = stanza_fields(s);
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            // `install ok installed`: the third word is the state.
            if get("status")?.split_whitespace().nth(2) != Some("installed") {
                return None;
            }
            let name = get("package")?.to_string();
            let version = get("version")?.to_string();
            let (source, source_version) = match get("source") {
                Some(s) => match s.split_once('(') {
                    Some((n, v)) => (n.trim().to_string(), v.trim_end_matches(')').trim().into()),
                    None => (s.trim().to_string(), version.clone()),
                },
                None => (name.clone(), version.clone()),
            };
            Some(Installed {
                name,
                arch: get("architecture").unwrap_or("all").to_string(),
                version,
                source,
                source_version,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_with_their_source() {
        let status = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: libjq1
Status: install ok installed
Architecture: amd64
Source: jq (1.6-2.1)
Version: 1.6-2.1+b1

Package: adduser
Status: install ok installed
Architecture: all
Version: 3.134
";
        assert_eq!(
            installed(status),
            [
                Installed {
                    name: "adduser".into(),
                    version: "3.134".into(),
                    arch: "all".into(),
                    source: "adduser".into(),
                    source_version: "3.134".into(),
                },
                Installed {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u10".into(),
                    arch: "amd64".into(),
                    source: "glibc".into(),
                    source_version: "2.36-9+deb12u10".into(),
                },
                Installed {
                    name: "libjq1".into(),
                    version: "1.6-2.1+b1".into(),
                    arch: "amd64".into(),
                    source: "jq".into(),
                    source_version: "1.6-2.1".into(),
                },
            ]
        );
    }
}
