//! Presentation of what the reader finds: `ls -ln`-style lines and JSON.
//!
//! Pure functions, used by `rootbox inspect`. Names are bytes on disk;
//! text output shows valid UTF-8 as is and escapes everything else
//! (see [`escape`]), so any name round-trips unambiguously.

use serde_json::{json, Value};

use super::{Entry, FileKind, FsInfo, Subvolume, Timespec};

/// `ls -l` permission string of a full `st_mode`, e.g. `drwxr-xr-x`,
/// `-rwsr-xr-x`, `drwxrwxrwt`.
pub fn mode_string(mode: u32) -> String {
    let type_char = match FileKind::from_mode(mode) {
        Some(FileKind::File) => '-',
        Some(FileKind::Dir | FileKind::Subvolume) => 'd',
        Some(FileKind::Symlink) => 'l',
        Some(FileKind::CharDev) => 'c',
        Some(FileKind::BlockDev) => 'b',
        Some(FileKind::Fifo) => 'p',
        Some(FileKind::Socket) => 's',
        None => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(type_char);
    // (read bit, special bit, letter when special and executable).
    let triplets = [
        (0o400, 0o4000, 's'),
        (0o040, 0o2000, 's'),
        (0o004, 0o1000, 't'),
    ];
    for (read, special, letter) in triplets {
        let write = read >> 1;
        let exec = read >> 2;
        s.push(if mode & read != 0 { 'r' } else { '-' });
        s.push(if mode & write != 0 { 'w' } else { '-' });
        s.push(match (mode & special != 0, mode & exec != 0) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A timestamp as UTC `YYYY-MM-DD HH:MM:SS` (nanoseconds dropped).
pub fn format_time(t: Timespec) -> String {
    let days = t.sec.div_euclid(86_400);
    let secs = t.sec.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Bytes as text: valid UTF-8 is kept except control characters and `\`,
/// which are written `\xNN` and `\\`; invalid bytes become `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && (c as u32) < 0x100 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `ls -ln`-like line: mode, uid, gid, size (`major,minor` for
/// devices), mtime, path, then ` -> target` for symlinks,
/// ` [subvolume N]` for subvolumes and ` [xattrs: a,b]` when there are any.
/// The root directory shows as `.`.
pub fn entry_line(e: &Entry) -> String {
    let size = match e.kind {
        FileKind::CharDev | FileKind::BlockDev => {
            let (major, minor) = e.device_numbers();
            format!("{major},{minor}")
        }
        _ => e.size.to_string(),
    };
    let path = if e.path.is_empty() {
        ".".to_string()
    } else {
        escape(&e.path)
    };
    let mut line = format!(
        "{} {:>5} {:>5} {:>10} {} {}",
        mode_string(e.mode),
        e.uid,
        e.gid,
        size,
        format_time(e.mtime),
        path
    );
    if let Some(target) = &e.symlink_target {
        line.push_str(" -> ");
        line.push_str(&escape(target));
    }
    if let Some(id) = e.subvolume {
        line.push_str(&format!(" [subvolume {id}]"));
    }
    if !e.xattrs.is_empty() {
        let names: Vec<String> = e.xattrs.iter().map(|(n, _)| escape(n)).collect();
        line.push_str(&format!(" [xattrs: {}]", names.join(",")));
    }
    line
}

/// One line per subvolume: id, `ro`/`rw`, uuid, path (`<top level>` for
/// id 5), and `(default)` on the default one.
pub fn subvolume_line(sv: &Subvolume, default_id: u64) -> String {
    let path = if sv.id == 5 {
        "<top level>".to_string()
    } else {
        escape(&sv.path)
    };
    format!(
        "{:>6} {} {} {}{}",
        sv.id,
        if sv.readonly { "ro" } else { "rw" },
        sv.uuid,
        path,
        if sv.id == default_id {
            " (default)"
        } else {
            ""
        }
    )
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::CharDev => "chardev",
        FileKind::BlockDev => "blockdev",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::Subvolume => "subvolume",
    }
}

fn time_json(t: Timespec) -> Value {
    json!({ "sec": t.sec, "nsec": t.nsec })
}

/// An xattr value: `{"name", "value"}` when the value is printable UTF-8,
/// `{"name", "hex"}` otherwise (ACLs, capabilities).
fn xattr_json(name: &[u8], value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(s) if !s.chars().any(char::is_control) => json!({ "name": escape(name), "value": s }),
        _ => json!({ "name": escape(name), "hex": hex(value) }),
    }
}

/// An entry as JSON. Paths and names are [`escape`]d strings.
pub fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "path": escape(&e.path),
        "ino": e.ino,
        "type": kind_name(e.kind),
        "mode": e.mode,
        "permissions": mode_string(e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "nlink": e.nlink,
        "rdev": e.rdev,
        "atime": time_json(e.atime),
        "mtime": time_json(e.mtime),
        "ctime": time_json(e.ctime),
        "flags": e.flags,
        "xattrs": e.xattrs.iter().map(|(n, v)| xattr_json(n, v)).collect::<Vec<_>>(),
    });
    if let Some(target) = &e.symlink_target {
        v["symlink_target"] = Value::String(escape(target));
    }
    if let Some(id) = e.subvolume {
        v["subvolume"] = json!(id);
    }
    v
}

/// A subvolume as JSON.
pub fn subvolume_json(sv: &Subvolume, default_id: u64) -> Value {
    json!({
        "id": sv.id,
        "name": escape(&sv.name),
        "path": escape(&sv.path),
        "parent_id": sv.parent_id,
        "dirid": sv.dirid,
        "uuid": sv.uuid,
        "parent_uuid": sv.parent_uuid,
        "received_uuid": sv.received_uuid,
        "readonly": sv.readonly,
        "generation": sv.generation,
        "otime": time_json(sv.otime),
        "default": sv.id == default_id,
    })
}

/// Superblock facts as JSON.
pub fn info_json(info: &FsInfo) -> Value {
    json!({
        "label": info.label,
        "fsid": info.fsid,
        "metadata_uuid": info.metadata_uuid,
        "nodesize": info.nodesize,
        "sectorsize": info.sectorsize,
        "total_bytes": info.total_bytes,
        "bytes_used": info.bytes_used,
        "generation": info.generation,
        "csum_type": info.csum_type.name(),
        "num_devices": info.num_devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100600), "-rw-------");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o041776), "drwxrwxrwT");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o102755), "-rwxr-sr-x");
        assert_eq!(mode_string(0o106644), "-rwSr-Sr--");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o020644), "crw-r--r--");
        assert_eq!(mode_string(0o060660), "brw-rw----");
        assert_eq!(mode_string(0o010644), "prw-r--r--");
        assert_eq!(mode_string(0o140755), "srwxr-xr-x");
        assert_eq!(mode_string(0o000644), "?rw-r--r--");
    }

    #[test]
    fn times() {
        let t = |sec| format_time(Timespec { sec, nsec: 0 });
        assert_eq!(t(0), "1970-01-01 00:00:00");
        assert_eq!(t(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(t(1_795_692_292), "2026-11-26 11:24:52");
        assert_eq!(t(-1), "1969-12-31 23:59:59");
        assert_eq!(t(4_102_444_800), "2100-01-01 00:00:00");
        // Extreme values do not panic.
        let _ = t(i64::MIN);
        let _ = t(i64::MAX);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape(b"plain/\xc3\xa9t\xc3\xa9"), "plain/été");
        assert_eq!(escape(b"a\nb"), "a\\x0ab");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape(b"\xff\xfe"), "\\xff\\xfe");
    }
}
