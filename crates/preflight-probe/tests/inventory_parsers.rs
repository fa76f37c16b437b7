//! Table tests of the inventory parsers on sample text and on sysfs-like trees built in a
//! temporary directory.

use std::fs;
use std::path::Path;

use preflight_probe::inventory::{
    clock_from_timex, parse_cpu_list, parse_cpu_model, parse_meminfo, parse_mountinfo,
    parse_os_release, parse_uptime, read_cpu_topology, read_disks, read_selinux, Memory,
    MountEntry, OsRelease,
};

#[test]
fn os_release_table() {
    let cases: &[(&str, OsRelease)] = &[
        (
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nID=debian\n",
            OsRelease {
                id: "debian".into(),
                id_like: "".into(),
                version_id: "12".into(),
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            },
        ),
        (
            "# comment\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n\
             PRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n",
            OsRelease {
                id: "rocky".into(),
                id_like: "rhel centos fedora".into(),
                version_id: "9.3".into(),
                pretty_name: "Rocky Linux 9.3 (Blue Onyx)".into(),
            },
        ),
        (
            "ID='ubuntu'\nPRETTY_NAME=\"say \\\"hi\\\" \\$x\"\n\n  \nbroken line\n",
            OsRelease {
                id: "ubuntu".into(),
                id_like: "".into(),
                version_id: "".into(),
                pretty_name: "say \"hi\" $x".into(),
            },
        ),
        ("", OsRelease::default()),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_os_release(text), want, "input {text:?}");
    }
}

#[test]
fn meminfo_table() {
    let full = "MemTotal:       24684096 kB\nMemFree:        21197280 kB\n\
                MemAvailable:   23941544 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097000 kB\n";
    assert_eq!(
        parse_meminfo(full),
        Ok(Memory {
            total_bytes: 24_684_096 * 1024,
            available_bytes: 23_941_544 * 1024,
            swap_total_bytes: 2_097_148 * 1024,
            swap_free_bytes: 2_097_000 * 1024,
        })
    );
    // Old kernels have no MemAvailable: MemFree stands in; no swap lines means no swap.
    let old = "MemTotal: 1000 kB\nMemFree: 400 kB\n";
    assert_eq!(
        parse_meminfo(old),
        Ok(Memory {
            total_bytes: 1_024_000,
            available_bytes: 409_600,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
        })
    );
    assert_eq!(
        parse_meminfo("MemFree: 1 kB\n"),
        Err("no MemTotal line".to_string())
    );
    assert!(parse_meminfo("garbage").is_err());
}

#[test]
fn cpu_list_table() {
    let ok: &[(&str, Vec<u32>)] = &[
        ("0", vec![0]),
        ("0-3\n", vec![0, 1, 2, 3]),
        ("0,2,4-5", vec![0, 2, 4, 5]),
        ("", vec![]),
    ];
    for (text, want) in ok {
        assert_eq!(&parse_cpu_list(text).expect("valid list"), want, "{text:?}");
    }
    for bad in ["a", "3-1", "0-", "1-x", "0-99999999"] {
        assert!(parse_cpu_list(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn cpu_model_table() {
    let cases = [
        (
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n",
            "Intel(R) Xeon(R) Processor",
        ),
        ("processor : 0\ncpu model : MIPS 24Kc V7.4\n", "MIPS 24Kc V7.4"),
        ("processor : 0\ncpu : POWER9 (architected)\n", "POWER9 (architected)"),
        ("processor : 0\nBogoMIPS : 50.00\n", ""),
    ];
    for (text, want) in cases {
        assert_eq!(parse_cpu_model(text), want);
    }
}

#[test]
fn mountinfo_table() {
    let text = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
22 27 0:21 / /proc rw,relatime - proc proc rw
60 27 8:17 /data /srv/with\\040space rw,relatime shared:5 master:1 - xfs /dev/sdb1 rw
garbage line
61 27 x:y / /bad rw - ext4 /dev/sdc rw
";
    let got = parse_mountinfo(text);
    assert_eq!(
        got,
        vec![
            MountEntry {
                major: 254,
                minor: 0,
                root: "/".into(),
                mount_point: "/".into(),
                fs_type: "ext4".into(),
                source: "/dev/vda".into(),
            },
            MountEntry {
                major: 0,
                minor: 21,
                root: "/".into(),
                mount_point: "/proc".into(),
                fs_type: "proc".into(),
                source: "proc".into(),
            },
            MountEntry {
                major: 8,
                minor: 17,
                root: "/data".into(),
                mount_point: "/srv/with space".into(),
                fs_type: "xfs".into(),
                source: "/dev/sdb1".into(),
            },
        ]
    );
}

#[test]
fn uptime_table() {
    assert_eq!(parse_uptime("640.52 1200.10\n"), Ok(640));
    assert_eq!(parse_uptime("0.00 0.00"), Ok(0));
    assert!(parse_uptime("").is_err());
    assert!(parse_uptime("-5 1").is_err());
    assert!(parse_uptime("abc").is_err());
}

#[test]
fn clock_table() {
    let sync = clock_from_timex(libc::TIME_OK, 0, 1500);
    assert!(sync.synchronized);
    assert_eq!(sync.max_error_us, 1500);
    assert_eq!(sync.source, "adjtimex");
    assert!(!clock_from_timex(libc::TIME_OK, libc::STA_UNSYNC, 16_000_000).synchronized);
    assert!(!clock_from_timex(libc::TIME_ERROR, 0, 16_000_000).synchronized);
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("test paths have a parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

#[test]
fn selinux_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fsdir = dir.path().join("selinuxfs");
    let config = dir.path().join("config");
    assert_eq!(read_selinux(&fsdir, &config), "absent");
    write(&config, "SELINUX=disabled\n");
    assert_eq!(read_selinux(&fsdir, &config), "disabled");
    fs::create_dir_all(&fsdir).expect("mkdir");
    write(&config, "SELINUX=enforcing\n");
    assert_eq!(read_selinux(&fsdir, &config), "disabled");
    write(&fsdir.join("enforce"), "0");
    assert_eq!(read_selinux(&fsdir, &config), "permissive");
    write(&fsdir.join("enforce"), "1\n");
    assert_eq!(read_selinux(&fsdir, &config), "enforcing");
}

#[test]
fn cpu_topology_counts_like_lscpu() {
    // Two sockets, two cores each, two threads per core; cpu7 offline.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("online"), "0-6\n");
    for cpu in 0..8u32 {
        let topo = root.join(format!("cpu{cpu}/topology"));
        write(&topo.join("physical_package_id"), &format!("{}\n", cpu / 4));
        write(&topo.join("die_id"), "0\n");
        write(&topo.join("core_id"), &format!("{}\n", (cpu / 2) % 2));
    }
    let cpu = read_cpu_topology(root);
    assert_eq!((cpu.sockets, cpu.cores, cpu.threads), (2, 4, 7));

    let missing = read_cpu_topology(&root.join("nothing-here"));
    assert_eq!((missing.sockets, missing.cores, missing.threads), (0, 0, 0));
}

#[test]
fn disks_like_lsblk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = dir.path().join("block");
    let udev = dir.path().join("udev");
    // A disk with two partitions, a RAM disk, an unused and a used loop device, an empty zram.
    write(&sys.join("sda/dev"), "8:0\n");
    write(&sys.join("sda/size"), "1000\n");
    write(&sys.join("sda/queue/rotational"), "1\n");
    write(&sys.join("sda/device/model"), "QEMU HARDDISK   \n");
    write(&sys.join("sda/sda2/dev"), "8:2\n");
    write(&sys.join("sda/sda2/partition"), "2\n");
    write(&sys.join("sda/sda2/size"), "600\n");
    write(&sys.join("sda/sda1/dev"), "8:1\n");
    write(&sys.join("sda/sda1/partition"), "1\n");
    write(&sys.join("sda/sda1/size"), "400\n");
    write(&udev.join("b8:1"), "S:disk/by-uuid/x\nE:ID_FS_TYPE=xfs\n");
    write(&sys.join("ram0/dev"), "1:0\n");
    write(&sys.join("ram0/size"), "8192\n");
    write(&sys.join("loop0/dev"), "7:0\n");
    write(&sys.join("loop0/size"), "0\n");
    write(&sys.join("loop1/dev"), "7:1\n");
    write(&sys.join("loop1/size"), "2048\n");
    write(&sys.join("loop1/queue/rotational"), "0\n");
    write(&sys.join("zram0/dev"), "252:0\n");
    write(&sys.join("zram0/size"), "0\n");
    let mounts = parse_mountinfo("30 1 8:2 / /data rw - ext4 /dev/sda2 rw\n");

    let disks = read_disks(&sys, &udev, &mounts);
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["loop1", "sda", "zram0"]);
    let sda = &disks[1];
    assert_eq!(sda.size_bytes, 512_000);
    assert!(sda.rotational);
    assert_eq!(sda.model, "QEMU HARDDISK");
    let parts: Vec<(&str, u64, &str)> = sda
        .partitions
        .iter()
        .map(|p| (p.name.as_str(), p.size_bytes, p.fs_type.as_str()))
        .collect();
    assert_eq!(parts, [("sda1", 204_800, "xfs"), ("sda2", 307_200, "ext4")]);
    assert!(!disks[0].rotational);
    assert_eq!(disks[2].size_bytes, 0);
}
