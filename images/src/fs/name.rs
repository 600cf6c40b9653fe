//! Names are bytes: a Linux file name is any bytes but NUL and `/` (up to
//! 255 of them), not necessarily UTF-8, and may hold a newline, a `\` or a
//! `:`. [`Name`] carries a path, a name, a symlink target or an xattr name
//! as those bytes, byte for byte, and shows them (and serializes them, as
//! a JSON string) losslessly escaped: UTF-8 characters as themselves but
//! `\` as `\\`, and every control character and every byte that is not
//! part of valid UTF-8 as `\xnn` (two lowercase hex digits, as `rootbox
//! inspect` writes btrfs names). A path that is valid UTF-8 without
//! control characters or `\` is shown as it is.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of a path, a name, a symlink target or an xattr name (see the
/// module doc); ordered by bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Vec<u8>);

/// The longest name Linux allows (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

impl Name {
    /// The image's root, `/`.
    pub fn root() -> Name {
        Name(b"/".to_vec())
    }

    /// These bytes.
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Name {
        Name(b.into())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The image path of `name` in the directory `self` (`/` + `etc` =
    /// `/etc`).
    pub fn join(&self, name: &[u8]) -> Name {
        let mut p = self.0.clone();
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        Name(p)
    }

    /// The last component of a path.
    pub fn file_name(&self) -> &[u8] {
        let b = &self.0;
        match b.iter().rposition(|&c| c == b'/') {
            Some(i) => &b[i + 1..],
            None => b,
        }
    }

    /// Whether any byte is `c`.
    pub fn contains(&self, c: u8) -> bool {
        self.0.contains(&c)
    }

    /// The escaped text (see the module doc).
    pub fn escaped(&self) -> String {
        let mut s = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    c if c.is_control() && (c as u32) < 0x100 => {
                        s.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => s.push(c),
                }
            }
            for b in chunk.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        s
    }

    /// The bytes of an escaped text ([`Name::escaped`]); `None` if it is
    /// not one.
    pub fn unescape(s: &str) -> Option<Name> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                out.push(b[i]);
                i += 1;
                continue;
            }
            match b.get(i + 1)? {
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                }
                b'x' => {
                    let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            }
        }
        Some(Name(out))
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(s.as_bytes().to_vec())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escaped())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.escaped())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.escaped())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = String::deserialize(d)?;
        Name::unescape(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an escaped name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_round_trip_through_the_escaped_text() {
        let cases: [(&[u8], &str); 6] = [
            (b"/etc/passwd", "/etc/passwd"),
            (b"/srv/caf\xe9-latin1", "/srv/caf\\xe9-latin1"),
            ("/srv/café".as_bytes(), "/srv/café"),
            (b"/a\nb", "/a\\x0ab"),
            (b"/back\\slash:colon", "/back\\\\slash:colon"),
            (b"/x\\xE9", "/x\\\\xE9"),
        ];
        for (bytes, text) in cases {
            let n = Name::from_bytes(bytes);
            assert_eq!(n.escaped(), text);
            assert_eq!(Name::unescape(text), Some(n.clone()));
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), n);
        }
        assert_eq!(Name::unescape("\\q"), None);
        assert_eq!(
            Name::root().join(b"etc").join(b"a\xff"),
            Name::from_bytes(&b"/etc/a\xff"[..])
        );
        assert_eq!(Name::from("/etc/x").file_name(), b"x");
    }
}
