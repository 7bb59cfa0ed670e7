//! Validation of the merged role as a whole, for what no single entry
//! shows: the base and architecture against `imagectl.toml`, the instance
//! type and volume, two things on one path, units boot starts that the
//! image lacks; then the conversion into a [`Role`] in canonical order.

use std::collections::BTreeMap;
use std::ops::Range;

use imagectl_image::config::{Boot, BootTemplate};

use super::entries::is_unit_name;
use super::load::{At, Loader};
use super::merge::Merged;
use super::{Archive, FileSpec, Image, Role, TestSpec, ROLES_DIR};
use crate::arch::Arch;
use crate::diag::{did_you_mean, Diagnostic};

impl Loader<'_> {
    /// Checks the merged role as a whole and turns it into plain data.
    pub(super) fn finish(
        &mut self,
        name: &str,
        is_abstract: bool,
        m: Merged,
        sources: Vec<String>,
    ) -> Option<Role> {
        let before = self.diags.0.len();
        let (base, arch) = self.base_and_arch(name, is_abstract, &m);
        let instance_type = self.instance_type(&m, arch);
        let volume_size_gb = self.volume_size(&m);
        let kernel_cmdline = self.kernel_cmdline(&m);
        self.check_dests(&m);
        self.check_start(&m);
        if !is_abstract {
            self.check_params(name, &m);
        }
        if self.diags.0.len() > before || m.broken {
            return None;
        }
        let image = Image {
            base,
            instance_type,
            volume_size_gb,
            arch,
            method: m.method.as_ref().map(|x| x.v).unwrap_or_default(),
            kernel_cmdline,
        };
        Some(into_role(name, is_abstract, image, m, sources))
    }

    /// The base, which must be in `imagectl.toml`, and the architecture:
    /// the base's, which `arch` may only repeat.
    fn base_and_arch(
        &mut self,
        name: &str,
        is_abstract: bool,
        m: &Merged,
    ) -> (Option<String>, Arch) {
        let bases = self.bases;

        let mut arch = m.arch.as_ref().map(|a| a.v);
        let base = match &m.base {
            Some(b) => match bases.get(&b.v) {
                Some(found) => {
                    if let Some(a) = &m.arch {
                        if a.v != found.architecture {
                            let d = self
                                .diag(a, format!("role asks for {} but base `{}` is {}", a.v.as_str(), b.v, found.architecture.as_str()))
                                .help("pick a base of that architecture in `imagectl.toml`, or remove `arch`");
                            self.diags.push(d);
                        }
                    }
                    arch = Some(found.architecture);
                    Some(b.v.clone())
                }
                None => {
                    let mut d = self.diag(b, format!("unknown base `{}`", b.v));
                    d = match did_you_mean(&b.v, bases.keys().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!(
                            "add `[bases.{}]` to `imagectl.toml`, or use one of: {}",
                            b.v,
                            bases.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    self.diags.push(d);
                    None
                }
            },
            None => {
                if !is_abstract && !m.broken {
                    let file = format!("{ROLES_DIR}/{name}.toml");
                    self.diags.push(
                        Diagnostic::file(file, format!("role `{name}` has no base image"))
                            .help("set `[image] base = \"...\"` here or in a parent role, or mark the role `abstract = true`"),
                    );
                }
                None
            }
        };
        (base, arch.unwrap_or(Arch::X86_64))
    }

    /// The build instance type, which must be of the image's architecture.
    fn instance_type(&mut self, m: &Merged, arch: Arch) -> String {
        match &m.instance_type {
            Some(t) => {
                if !is_instance_type(&t.v) {
                    let d = self
                        .diag(t, format!("`{}` is not an EC2 instance type", t.v))
                        .help("write it like `t3.medium` or `m7g.large`");
                    self.diags.push(d);
                } else if instance_arch(&t.v) != arch {
                    let d = self
                        .diag(
                            t,
                            format!(
                                "instance type `{}` is {} but the image is {}",
                                t.v,
                                instance_arch(&t.v).as_str(),
                                arch.as_str()
                            ),
                        )
                        .help(match arch {
                            Arch::Arm64 => "use a Graviton type such as `t4g.medium`",
                            Arch::X86_64 => "use an x86_64 type such as `t3.medium`",
                        });
                    self.diags.push(d);
                }
                t.v.clone()
            }
            None => match arch {
                Arch::X86_64 => "t3.small".into(),
                Arch::Arm64 => "t4g.small".into(),
            },
        }
    }

    /// The root volume size in GiB.
    fn volume_size(&mut self, m: &Merged) -> u32 {
        match &m.volume_size_gb {
            Some(v) => {
                if !(8..=16384).contains(&v.v) {
                    let d = self
                        .diag(v, format!("volume size of {} GiB is out of range", v.v))
                        .help("use 8 to 16384 GiB; Debian's cloud images need at least 8");
                    self.diags.push(d);
                }
                v.v
            }
            None => 8,
        }
    }

    /// Extra kernel arguments: each one word of printable ASCII, and none
    /// of those imagectl sets itself (the root and the console it reads).
    fn kernel_cmdline(&mut self, m: &Merged) -> Vec<String> {
        let mut out = Vec::new();
        for a in m.kernel_cmdline.iter().flatten() {
            let word = !a.v.is_empty() && a.v.bytes().all(|b| b.is_ascii_graphic());
            let key = a.v.split('=').next().unwrap_or_default();
            if !word {
                let d = self
                    .diag(a, "a kernel argument must be one word of printable ASCII")
                    .help(
                        "write each argument as its own string, e.g. [\"quiet\", \"loglevel=3\"]",
                    );
                self.diags.push(d);
            } else if let Some((why, help)) = imagectl_argument(key) {
                let d = self.diag(a, why).help(help);
                self.diags.push(d);
            }
            out.push(a.v.clone());
        }
        out
    }

    /// Two things may not land on the same path: the build would keep
    /// whichever came last, silently.
    fn check_dests(&mut self, m: &Merged) {
        let mut dests: BTreeMap<String, (usize, Range<usize>)> = BTreeMap::new();
        let at = |kind: &'static str, path: &String, file: usize, span: &Range<usize>| {
            let v = path.clone();
            (
                kind,
                At {
                    v,
                    file,
                    span: span.clone(),
                },
            )
        };
        let mut paths: Vec<(&str, At<String>)> = Vec::new();
        for x in &m.files {
            paths.push(at("file", &x.v.dest, x.file, &x.span));
        }
        for x in &m.templates {
            paths.push(at("template", &x.v.file.dest, x.file, &x.span));
        }
        for x in &m.archives {
            paths.push(at("archive", &x.v.dest, x.file, &x.span));
            if let Some(l) = &x.v.link {
                paths.push(at("archive link", l, x.file, &x.span));
            }
        }
        for (kind, item) in &paths {
            if let Some((pf, ps)) = dests.get(&item.v) {
                let prev = At {
                    v: (),
                    file: *pf,
                    span: ps.clone(),
                };
                let where_ = format!("{}:{}", self.sources[*pf].rel, self.line_of(&prev));
                let d = self
                    .diag(
                        item,
                        format!("{kind} destination `{}` is used twice", item.v),
                    )
                    .help(format!(
                        "the other entry is at {where_}; give each file its own `dest`"
                    ));
                self.diags.push(d);
            } else {
                dests.insert(item.v.clone(), (item.file, item.span.clone()));
            }
        }
    }

    /// The agent can only start what the image has: a unit the role
    /// declares, or a unit file it bakes.
    fn check_start(&mut self, m: &Merged) {
        for s in &m.start {
            let declared = m.services.contains_key(&s.v);
            let baked = m.files.iter().any(|f| {
                [
                    "/etc/systemd/system/",
                    "/lib/systemd/system/",
                    "/usr/lib/systemd/system/",
                ]
                .iter()
                .any(|dir| f.v.dest == format!("{dir}{}", s.v))
            });
            if !is_unit_name(&s.v) {
                let d = self
                    .diag(s, format!("`{}` is not a systemd unit name", s.v))
                    .help("name the unit with its suffix, like `nginx.service`");
                self.diags.push(d);
            } else if !declared && !baked && !m.broken {
                let d = self
                    .diag(s, format!("boot starts `{}`, which the image neither enables nor installs", s.v))
                    .help(format!(
                        "declare it with `[[services]] name = \"{}\"` (`enabled = false` if only the agent starts it), or bake its unit file with `[[files]]`",
                        s.v
                    ));
                self.diags.push(d);
            }
        }
    }
}

/// A valid merged role as plain data, its lists in canonical order: what
/// is sorted here is hashed, so the order must not depend on the files'.
fn into_role(name: &str, is_abstract: bool, image: Image, m: Merged, sources: Vec<String>) -> Role {
    let mut files: Vec<FileSpec> = m.files.into_iter().map(|x| x.v).collect();
    files.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut archives: Vec<Archive> = m.archives.into_iter().map(|x| x.v).collect();
    archives.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut templates: Vec<BootTemplate> = m
        .templates
        .into_iter()
        .map(|t| BootTemplate {
            source: t.v.file.source,
            dest: t.v.file.dest,
            mode: t.v.file.mode,
            owner: t.v.file.owner,
            group: t.v.file.group,
            multiline: t.v.multiline,
        })
        .collect();
    templates.sort_by(|a, b| a.dest.cmp(&b.dest));
    Role {
        name: name.to_string(),
        description: m.description.map(|d| d.v).unwrap_or_default(),
        is_abstract,
        image,
        packages: m.packages.into_values().map(|p| p.v).collect(),
        users: m.users.into_iter().map(|u| u.v).collect(),
        files,
        archives,
        services: m.services.into_values().map(|s| s.v).collect(),
        checks: m.checks.into_iter().map(|c| c.v).collect(),
        boot: Boot {
            parameters: m.parameters.map(|p| p.v),
            start: m.start.into_iter().map(|s| s.v).collect(),
            templates,
            health: m.health,
            lifecycle_hook: m.lifecycle_hook.map(|h| h.v),
            on_failure: m.on_failure.map(|o| o.v).unwrap_or_default(),
        },
        test: TestSpec {
            sidecars: m.sidecars,
        },
        sources,
    }
}

fn is_instance_type(s: &str) -> bool {
    match s.split_once('.') {
        Some((family, size)) => {
            !family.is_empty()
                && !size.is_empty()
                && family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && size
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

/// The architecture of an instance family: Graviton families carry a `g`
/// right after their generation (`t4g`, `m7gd`, `c6gn`), and `a1` is ARM.
fn instance_arch(instance_type: &str) -> Arch {
    let family = instance_type.split('.').next().unwrap_or("");
    if family == "a1" {
        return Arch::Arm64;
    }
    let rest = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if rest.len() != after_digits.len() && after_digits.starts_with('g') {
        Arch::Arm64
    } else {
        Arch::X86_64
    }
}

/// Why a role may not set kernel argument `key`, and what to do: the
/// arguments imagectl sets itself.
fn imagectl_argument(key: &str) -> Option<(&'static str, &'static str)> {
    match key {
        "root" => Some((
            "`root=` is imagectl's: the disk's root partition, by its UUID",
            "remove it; the root file system is always the disk's second partition",
        )),
        "console" => Some((
            "`console=` is imagectl's: the serial console EC2 shows and `imagectl test --vm` reads (ttyS0)",
            "remove it; with another console a failed boot could not be diagnosed",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_families_are_arm() {
        for t in [
            "t4g.small",
            "m7gd.large",
            "c6gn.xlarge",
            "a1.medium",
            "im4gn.large",
        ] {
            assert_eq!(instance_arch(t), Arch::Arm64, "{t}");
        }
        for t in ["t3.medium", "g5.xlarge", "inf2.xlarge", "m5.large"] {
            assert_eq!(instance_arch(t), Arch::X86_64, "{t}");
        }
    }
}
