//! Conversion between a [`Sandbox`] and an OCI runtime configuration
//! (`config.json`), so a sandbox can be described by, or exported as, the
//! format container tools share.
//!
//! What maps: namespaces, uid/gid mappings, mounts, process args, env, cwd,
//! root path, and whether capabilities are kept. rootbox's minimal /dev has
//! no OCI counterpart; it is written as a tmpfs mount carrying the option
//! `x-rootbox-dev`, which other runtimes read as a plain tmpfs.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec,
};

use crate::error::{Error, Result};
use crate::idmap::{IdMap, IdRange, MapMode};
use crate::mounts::MountOp;
use crate::sandbox::{Namespaces, Sandbox};

const MAP_ANNOTATION: &str = "org.rootbox.map";
const DEV_OPTION: &str = "x-rootbox-dev";

fn oci_err(e: impl std::fmt::Display) -> Error {
    Error::Oci(e.to_string())
}

fn mappings(ranges: &[IdRange]) -> Result<Vec<LinuxIdMapping>> {
    ranges
        .iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.outside)
                .size(r.count)
                .build()
                .map_err(oci_err)
        })
        .collect()
}

fn mount_to_oci(op: &MountOp) -> Result<Mount> {
    let b = MountBuilder::default().destination(op.dst());
    let b = match op {
        MountOp::Bind { src, readonly, .. } => b.typ("bind").source(src.clone()).options(vec![
            "rbind".to_string(),
            if *readonly { "ro" } else { "rw" }.to_string(),
        ]),
        MountOp::Tmpfs { .. } => b.typ("tmpfs").source("tmpfs").options(vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "mode=755".to_string(),
        ]),
        MountOp::Proc { .. } => b.typ("proc").source("proc"),
        MountOp::Dev { .. } => b.typ("tmpfs").source("tmpfs").options(vec![
            "nosuid".to_string(),
            "mode=755".to_string(),
            DEV_OPTION.to_string(),
        ]),
    };
    b.build().map_err(oci_err)
}

fn mount_from_oci(m: &Mount) -> Result<MountOp> {
    let dst = m.destination().clone();
    let opts = m.options().clone().unwrap_or_default();
    let has = |o: &str| opts.iter().any(|x| x == o);
    match m.typ().as_deref() {
        Some("bind") | None if has("bind") || has("rbind") || m.typ().is_some() => {
            let src = m.source().clone().ok_or_else(|| {
                Error::Oci(format!("bind mount on {} has no source", dst.display()))
            })?;
            Ok(MountOp::Bind {
                src,
                dst,
                readonly: has("ro"),
            })
        }
        Some("tmpfs") if has(DEV_OPTION) => Ok(MountOp::Dev { dst }),
        Some("tmpfs") => Ok(MountOp::Tmpfs { dst }),
        Some("proc") => Ok(MountOp::Proc { dst }),
        other => Err(Error::Oci(format!(
            "mount on {} of type {:?} is not supported (rootbox knows bind, tmpfs and proc)",
            dst.display(),
            other.unwrap_or("none")
        ))),
    }
}

impl Sandbox {
    /// Describes this sandbox as an OCI runtime configuration. The id maps
    /// are resolved for the calling user, as a run would resolve them.
    pub fn to_oci(&self) -> Result<Spec> {
        let idmap = IdMap::resolve(self.map)?;
        let mut namespaces = vec![LinuxNamespaceType::User, LinuxNamespaceType::Mount];
        for (on, t) in [
            (self.namespaces.pid, LinuxNamespaceType::Pid),
            (self.namespaces.net, LinuxNamespaceType::Network),
            (self.namespaces.ipc, LinuxNamespaceType::Ipc),
            (self.namespaces.uts, LinuxNamespaceType::Uts),
        ] {
            if on {
                namespaces.push(t);
            }
        }
        let namespaces = namespaces
            .into_iter()
            .map(|t| {
                LinuxNamespaceBuilder::default()
                    .typ(t)
                    .build()
                    .map_err(oci_err)
            })
            .collect::<Result<Vec<_>>>()?;
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .uid_mappings(mappings(&idmap.uids)?)
            .gid_mappings(mappings(&idmap.gids)?)
            .build()
            .map_err(oci_err)?;
        let cwd = match &self.cwd {
            Some(c) => c.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        };
        let env = self
            .environment()
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect::<Vec<_>>();
        let mut process = ProcessBuilder::default()
            .args(
                self.argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
            )
            .env(env)
            .cwd(cwd)
            .no_new_privileges(true)
            .build()
            .map_err(oci_err)?;
        process.set_capabilities(if self.drop_caps {
            Some(
                LinuxCapabilitiesBuilder::default()
                    .bounding(Capabilities::new())
                    .effective(Capabilities::new())
                    .permitted(Capabilities::new())
                    .inheritable(Capabilities::new())
                    .ambient(Capabilities::new())
                    .build()
                    .map_err(oci_err)?,
            )
        } else {
            None
        });
        process.set_rlimits(None);
        process.set_apparmor_profile(None);
        let root = RootBuilder::default()
            .path(self.root.clone().unwrap_or_else(|| PathBuf::from("/")))
            .readonly(false)
            .build()
            .map_err(oci_err)?;
        let mut spec = Spec::default();
        spec.set_hostname(None);
        spec.set_root(Some(root));
        spec.set_process(Some(process));
        spec.set_linux(Some(linux));
        spec.set_mounts(Some(
            self.mounts
                .iter()
                .map(mount_to_oci)
                .collect::<Result<_>>()?,
        ));
        let map = match self.map {
            MapMode::Auto => "auto",
            MapMode::Single => "single",
            MapMode::Subid => "subid",
            MapMode::Subrange => "subrange",
        };
        spec.set_annotations(Some(HashMap::from([(
            MAP_ANNOTATION.to_string(),
            map.to_string(),
        )])));
        Ok(spec)
    }

    /// Reads a sandbox from an OCI runtime configuration. User and mount
    /// namespaces are always created; the id map mode comes from rootbox's
    /// annotation when present, else from the shape of the uid mappings.
    pub fn from_oci(spec: &Spec) -> Result<Sandbox> {
        let mut sb = Sandbox::new();
        if let Some(linux) = spec.linux() {
            let mut ns = Namespaces::default();
            for n in linux.namespaces().iter().flatten() {
                if n.path().is_some() {
                    return Err(Error::Oci(format!(
                        "joining an existing {:?} namespace is not supported",
                        n.typ()
                    )));
                }
                match n.typ() {
                    LinuxNamespaceType::User | LinuxNamespaceType::Mount => {}
                    LinuxNamespaceType::Pid => ns.pid = true,
                    LinuxNamespaceType::Network => ns.net = true,
                    LinuxNamespaceType::Ipc => ns.ipc = true,
                    LinuxNamespaceType::Uts => ns.uts = true,
                    other => {
                        return Err(Error::Oci(format!(
                            "{other:?} namespaces are not supported"
                        )))
                    }
                }
            }
            sb.namespaces = ns;
            let uids = linux.uid_mappings().clone().unwrap_or_default();
            sb.map = match uids.len() {
                0 => MapMode::Auto,
                1 if uids[0].size() == 1 => MapMode::Single,
                1 => MapMode::Auto,
                _ => MapMode::Subid,
            };
        }
        if let Some(mode) = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(MAP_ANNOTATION))
        {
            sb.map = mode.parse().map_err(Error::Oci)?;
        }
        for m in spec.mounts().iter().flatten() {
            sb.mounts.push(mount_from_oci(m)?);
        }
        if let Some(root) = spec.root() {
            if root.path() != &PathBuf::from("/") {
                sb.root = Some(root.path().clone());
            }
        }
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Oci("the configuration has no process".into()))?;
        sb.argv = process
            .args()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        sb.cwd = Some(process.cwd().clone());
        sb.clear_env = true;
        for kv in process.env().iter().flatten() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            sb.env.push((k.into(), Some(v.into())));
        }
        sb.drop_caps = process
            .capabilities()
            .as_ref()
            .is_some_and(|c| c.bounding().as_ref().is_none_or(|b| b.is_empty()));
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_sandbox() {
        let sb = Sandbox::new()
            .map_root()
            .unshare_pid()
            .ro_bind("/usr", "/usr")
            .bind("/tmp", "/tmp")
            .tmpfs("/run")
            .proc("/proc")
            .dev("/dev")
            .root("/")
            .chdir("/tmp")
            .clear_env()
            .env("PATH", "/usr/bin")
            .drop_caps(true)
            .command(["sh", "-c", "echo hi"]);
        let spec = sb.to_oci().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let back = Sandbox::from_oci(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.mounts, sb.mounts);
        assert_eq!(back.namespaces, sb.namespaces);
        assert_eq!(back.map, MapMode::Single);
        assert_eq!(back.argv, sb.argv);
        assert_eq!(back.cwd, sb.cwd);
        assert_eq!(back.environment(), sb.environment());
        assert!(back.drop_caps);
        assert_eq!(back.root, None, "root / is the host root");
    }

    #[test]
    fn unsupported_mounts_are_named() {
        let m = MountBuilder::default()
            .destination("/mnt")
            .typ("nfs")
            .source("server:/x")
            .build()
            .unwrap();
        let e = mount_from_oci(&m).unwrap_err().to_string();
        assert!(e.contains("/mnt") && e.contains("nfs"), "{e}");
    }
}
