//! Domain values of the probe crate to wire types. Wire types stop at the service.

use preflight_probe::inventory as inv;
use preflight_proto::v1 as pb;

/// The inventory as sent to the controller, stamped with this agent's version.
pub fn inventory(i: inv::Inventory) -> pb::Inventory {
    pb::Inventory {
        hostname: i.hostname,
        os: Some(pb::OsRelease {
            id: i.os.id,
            id_like: i.os.id_like,
            version_id: i.os.version_id,
            pretty_name: i.os.pretty_name,
        }),
        kernel: i.kernel,
        arch: i.arch,
        cpu: Some(pb::Cpu {
            model: i.cpu.model,
            sockets: i.cpu.sockets,
            cores: i.cpu.cores,
            threads: i.cpu.threads,
        }),
        memory: Some(pb::Memory {
            total_bytes: i.memory.total_bytes,
            available_bytes: i.memory.available_bytes,
            swap_total_bytes: i.memory.swap_total_bytes,
            swap_free_bytes: i.memory.swap_free_bytes,
        }),
        disks: i
            .disks
            .into_iter()
            .map(|d| pb::Disk {
                name: d.name,
                size_bytes: d.size_bytes,
                rotational: d.rotational,
                model: d.model,
                partitions: d
                    .partitions
                    .into_iter()
                    .map(|p| pb::Partition {
                        name: p.name,
                        size_bytes: p.size_bytes,
                        fs_type: p.fs_type,
                    })
                    .collect(),
            })
            .collect(),
        mounts: i
            .mounts
            .into_iter()
            .map(|m| pb::Mount {
                device: m.device,
                mount_point: m.mount_point,
                fs_type: m.fs_type,
                size_bytes: m.size_bytes,
                used_bytes: m.used_bytes,
                free_bytes: m.free_bytes,
            })
            .collect(),
        interfaces: i
            .interfaces
            .into_iter()
            .map(|n| pb::Interface {
                name: n.name,
                mac: n.mac,
                up: n.up,
                mtu: n.mtu,
                addresses: n.addresses,
            })
            .collect(),
        clock: Some(pb::ClockSync {
            synchronized: i.clock.synchronized,
            source: i.clock.source,
            max_error_us: i.clock.max_error_us,
        }),
        selinux: selinux_mode(&i.selinux).into(),
        uptime_s: i.uptime_s,
        open_files: Some(pb::OpenFilesLimit {
            soft: i.open_files.soft,
            hard: i.open_files.hard,
        }),
        agent_version: crate::VERSION.to_string(),
        collected_at_unix_ms: i.collected_at_unix_ms,
    }
}

/// The probe's SELinux word (`inventory::read_selinux`) as the wire enum.
fn selinux_mode(word: &str) -> pb::SelinuxMode {
    match word {
        "enforcing" => pb::SelinuxMode::Enforcing,
        "permissive" => pb::SelinuxMode::Permissive,
        "disabled" => pb::SelinuxMode::Disabled,
        "absent" => pb::SelinuxMode::Absent,
        _ => pb::SelinuxMode::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word the probe reports keeps its word in `--output json`, through the enum.
    #[test]
    fn selinux_words_survive_the_enum() {
        for word in ["enforcing", "permissive", "disabled", "absent"] {
            let mode = selinux_mode(word);
            assert_ne!(mode, pb::SelinuxMode::Unspecified, "{word}");
            assert_eq!(
                preflight_proto::json::name::<pb::SelinuxMode>(mode.into()),
                word
            );
        }
        assert_eq!(selinux_mode("strange"), pb::SelinuxMode::Unspecified);
    }

    /// The probe reads a tree with no selinuxfs and no config as `absent`, which the enum knows.
    #[test]
    fn the_probe_word_for_no_selinux_is_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let word = inv::read_selinux(&dir.path().join("fs"), &dir.path().join("config"));
        assert_eq!(selinux_mode(&word), pb::SelinuxMode::Absent);
    }
}
