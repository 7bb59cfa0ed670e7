//! Merging: each layer of a role, parents first, laid over what came
//! before it into a [`Merged`] role whose items still know where they were
//! written. Entries are checked one by one as they are merged.

use std::collections::BTreeMap;

use imagectl_image::config::{is_lifecycle_hook_name, Health, OnFailure};
use imagectl_image::template::Multiline;

use super::entries::is_unit_name;
use super::load::{At, Layer, Loader};
use super::raw::{RawBoot, RawPackages, RawRole, RawTest};
use super::sources::Kind;
use super::{Archive, Check, FileSpec, Method, Package, Service, User};
use crate::arch::Arch;
use crate::diag::did_you_mean;

/// A role while its layers are merged, every item still knowing where it came from.
#[derive(Default)]
pub(super) struct Merged {
    pub(super) broken: bool,
    pub(super) description: Option<At<String>>,
    pub(super) base: Option<At<String>>,
    pub(super) instance_type: Option<At<String>>,
    pub(super) volume_size_gb: Option<At<u32>>,
    pub(super) arch: Option<At<Arch>>,
    pub(super) method: Option<At<Method>>,
    pub(super) kernel_cmdline: Option<Vec<At<String>>>,
    pub(super) packages: BTreeMap<String, At<Package>>,
    pub(super) users: Vec<At<User>>,
    pub(super) files: Vec<At<FileSpec>>,
    pub(super) archives: Vec<At<Archive>>,
    pub(super) sidecars: Vec<String>,
    pub(super) services: BTreeMap<String, At<Service>>,
    pub(super) checks: Vec<At<Check>>,
    pub(super) parameters: Option<At<String>>,
    pub(super) start: Vec<At<String>>,
    pub(super) templates: Vec<At<TemplateSpec>>,
    pub(super) health: Option<Health>,
    pub(super) lifecycle_hook: Option<At<String>>,
    pub(super) on_failure: Option<At<OnFailure>>,
}

/// A `[[boot.templates]]` entry once checked: its file, which of its
/// printed values may hold control characters, and its text when it
/// parses (for the check against the role's test parameters).
pub(super) struct TemplateSpec {
    pub(super) file: FileSpec,
    pub(super) multiline: Multiline,
    pub(super) text: Option<String>,
}

impl Loader<'_> {
    /// Adds one layer on top of what its parents gave.
    ///
    /// Sections go in a fixed order: it is the order their problems are
    /// reported in.
    pub(super) fn merge(&mut self, m: &mut Merged, layer: &Layer) {
        let f = layer.file;
        let r = &layer.raw;
        if let Some(d) = &r.description {
            m.description = Some(Self::at(f, d.clone()));
        }
        if let Some(img) = &r.image {
            macro_rules! over {
                ($($k:ident),*) => { $( if let Some(v) = &img.$k { m.$k = Some(Self::at(f, v.clone())); } )* };
            }
            over!(base, instance_type, volume_size_gb, arch, method);
            if let Some(args) = &img.kernel_cmdline {
                m.kernel_cmdline = Some(args.iter().map(|a| Self::at(f, a.clone())).collect());
            }
        }
        if let Some(p) = &r.packages {
            self.merge_packages(m, f, p);
        }
        self.merge_users(m, f, r);
        self.merge_files(m, f, r);
        self.merge_archives(m, f, r);
        if let Some(t) = &r.test {
            self.merge_test(m, f, t);
        }
        self.merge_services(m, f, r);
        self.merge_checks(m, f, r);
        if let Some(b) = &r.boot {
            self.merge_boot(m, f, b);
        }
    }

    fn merge_packages(&mut self, m: &mut Merged, f: usize, p: &RawPackages) {
        let mut here: BTreeMap<String, At<Package>> = BTreeMap::new();
        for spec in &p.apt {
            let at = Self::at(f, spec.clone());
            let Some(pkg) = self.package(&at) else {
                continue;
            };
            if let Some(prev) = here.get(&pkg.name) {
                let d = self
                    .diag(&at, format!("package `{}` is listed twice", pkg.name))
                    .help(format!(
                        "keep one entry; the other is at line {}",
                        self.line_of(prev)
                    ));
                self.diags.push(d);
                continue;
            }
            here.insert(
                pkg.name.clone(),
                At {
                    v: pkg,
                    file: f,
                    span: at.span,
                },
            );
        }
        // A child's entry replaces its parent's: that is how a child pins
        // a package the parent installs unpinned.
        m.packages.extend(here);
    }

    fn merge_users(&mut self, m: &mut Merged, f: usize, r: &RawRole) {
        for u in r.users.iter().flatten() {
            let at = Self::at(f, u.clone());
            if let Some(user) = self.user(&at) {
                let pos = m.users.iter().position(|x| x.v.name == user.name);
                let entry = At {
                    v: user,
                    file: f,
                    span: at.span,
                };
                match pos {
                    Some(i) => m.users[i] = entry,
                    None => m.users.push(entry),
                }
            }
        }
    }

    fn merge_files(&mut self, m: &mut Merged, f: usize, r: &RawRole) {
        for x in r.files.iter().flatten() {
            let at = Self::at(f, x.clone());
            if let Some(spec) = self.file_spec(&at, "0644", Kind::File) {
                m.files.push(At {
                    v: spec,
                    file: f,
                    span: at.span,
                });
            }
        }
    }

    fn merge_archives(&mut self, m: &mut Merged, f: usize, r: &RawRole) {
        for x in r.archives.iter().flatten() {
            let at = Self::at(f, x.clone());
            if let Some(a) = self.archive(&at) {
                m.archives.push(At {
                    v: a,
                    file: f,
                    span: at.span,
                });
            }
        }
    }

    fn merge_test(&mut self, m: &mut Merged, f: usize, t: &RawTest) {
        m.sidecars = Vec::new();
        for c in &t.sidecars {
            let at = Self::at(f, c.clone());
            if at.v.trim().is_empty() {
                let d = self
                    .diag(&at, "sidecar runs nothing")
                    .help("give each sidecar a command, like `redis-server --port 6379 --save ''`");
                self.diags.push(d);
                continue;
            }
            m.sidecars.push(at.v);
        }
    }

    fn merge_services(&mut self, m: &mut Merged, f: usize, r: &RawRole) {
        for s in r.services.iter().flatten() {
            let at = Self::at(f, s.clone());
            let name = Self::at(f, at.v.name.clone());
            if !is_unit_name(&name.v) {
                let d = self
                    .diag(&name, format!("`{}` is not a systemd unit name", name.v))
                    .help("name the unit with its suffix, like `nginx.service` or `backup.timer`");
                self.diags.push(d);
                continue;
            }
            m.services.insert(
                name.v.clone(),
                At {
                    v: Service {
                        name: name.v,
                        enabled: at.v.enabled,
                    },
                    file: f,
                    span: name.span,
                },
            );
        }
    }

    fn merge_checks(&mut self, m: &mut Merged, f: usize, r: &RawRole) {
        for c in r.checks.iter().flatten() {
            let name = Self::at(f, c.get_ref().name.clone());
            let run = Self::at(f, c.get_ref().run.clone());
            if let Some(prev) = m.checks.iter().find(|x| x.v.name == name.v) {
                let d = self
                    .diag(&name, format!("check `{}` is defined twice", name.v))
                    .help(format!(
                        "check names must be unique; the other is in `{}`",
                        self.sources[prev.file].rel
                    ));
                self.diags.push(d);
                continue;
            }
            if run.v.trim().is_empty() {
                let d = self
                    .diag(&run, format!("check `{}` runs nothing", name.v))
                    .help("give `run` a command");
                self.diags.push(d);
                continue;
            }
            m.checks.push(At {
                v: Check {
                    name: name.v,
                    run: run.v,
                },
                file: f,
                span: name.span,
            });
        }
    }

    fn merge_boot(&mut self, m: &mut Merged, f: usize, b: &RawBoot) {
        if let Some(p) = &b.parameters {
            let at = Self::at(f, p.clone());
            self.check_parameters(&at);
            m.parameters = Some(at);
        }
        for s in &b.start {
            let at = Self::at(f, s.clone());
            if !m.start.iter().any(|x| x.v == at.v) {
                m.start.push(at);
            }
        }
        for t in &b.templates {
            let at = Self::at(f, t.clone());
            let file = At {
                v: at.v.file(),
                file: f,
                span: at.span.clone(),
            };
            if let Some(spec) = self.file_spec(&file, "0600", Kind::Template) {
                let text = self.check_template(&spec, &file);
                let multiline = self.multiline(f, at.v.multiline.as_ref(), &spec, text.as_deref());
                m.templates.push(At {
                    v: TemplateSpec {
                        file: spec,
                        multiline,
                        text,
                    },
                    file: f,
                    span: at.span,
                });
            }
        }
        if let Some(h) = &b.health {
            let at = Self::at(f, h.clone());
            if let Some(health) = self.health(&at) {
                m.health = Some(health);
            }
        }
        // Scalars, like `parameters`: a later role's value replaces its
        // parent's.
        if let Some(h) = &b.lifecycle_hook {
            let at = Self::at(f, h.clone());
            if self.check_lifecycle_hook(&at) {
                m.lifecycle_hook = Some(at);
            }
        }
        if let Some(o) = &b.on_failure {
            let at = Self::at(f, o.clone());
            if let Some(v) = self.on_failure(&at) {
                m.on_failure = Some(At {
                    v,
                    file: f,
                    span: at.span,
                });
            }
        }
    }

    /// `[boot] lifecycle_hook`: a name Auto Scaling would take, or every
    /// boot's `CompleteLifecycleAction` would be refused.
    fn check_lifecycle_hook(&mut self, at: &At<String>) -> bool {
        if is_lifecycle_hook_name(&at.v) {
            return true;
        }
        let what = if at.v.is_empty() {
            "lifecycle hook name is empty".to_string()
        } else if at.v.len() > 255 {
            format!("lifecycle hook name is {} characters long", at.v.len())
        } else {
            format!("`{}` is not a lifecycle hook name", at.v)
        };
        let d = self.diag(at, what).help(
            "write the name of the Auto Scaling group's launch lifecycle hook as the group has it: 1 to 255 letters, digits, `-`, `_` or `/`; or remove the key if the group has no hook",
        );
        self.diags.push(d);
        false
    }

    /// `[boot] on_failure`: `replace` or `stay`.
    fn on_failure(&mut self, at: &At<String>) -> Option<OnFailure> {
        if let Some(v) = OnFailure::parse(&at.v) {
            return Some(v);
        }
        let d = self
            .diag(at, format!("`{}` is not an `on_failure` value", at.v))
            .help(match did_you_mean(&at.v, OnFailure::NAMES) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "write `replace` (the default: a failed boot marks the instance unhealthy, so that Auto Scaling replaces it) or `stay` (Auto Scaling is told nothing and the instance stays, for debugging)".to_string(),
            });
        self.diags.push(d);
        None
    }
}
