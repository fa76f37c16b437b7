//! Port lists: `"80,443,8080-8090"` as a string, or `[80, 443, "8080-8090"]` as an array.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::PlanErrorKind;

pub use crate::net::PortRange;

/// A port list as written, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortsInput {
    /// `"80,443,8080-8090"`.
    Text(String),
    /// `[80, 443, "8080-8090"]`.
    Items(Vec<PortItem>),
}

/// One item of a port array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortItem {
    Number(i64),
    Text(String),
}

/// Longest port list text accepted, in bytes.
const MAX_PORTS_TEXT: usize = 16 * 1024;

impl PortsInput {
    /// Validates and normalizes (sorted, merged ranges). Errors are returned in order; the
    /// caller attaches the location.
    pub(crate) fn parse(&self) -> Result<Vec<PortRange>, Vec<PlanErrorKind>> {
        let mut ranges = Vec::new();
        let mut errors = Vec::new();
        let mut push = |r: Result<PortRange, PlanErrorKind>| match r {
            Ok(r) => ranges.push(r),
            Err(e) => errors.push(e),
        };
        match self {
            PortsInput::Text(t) => {
                if t.len() > MAX_PORTS_TEXT {
                    return Err(vec![PlanErrorKind::TooLong {
                        found: t.len(),
                        max: MAX_PORTS_TEXT,
                    }]);
                }
                for tok in t.split(',') {
                    let tok = tok.trim();
                    if tok.is_empty() {
                        continue;
                    }
                    push(parse_token(tok));
                }
            }
            PortsInput::Items(items) => {
                for item in items {
                    match item {
                        PortItem::Number(n) => push(single(*n)),
                        PortItem::Text(t) if t.len() > MAX_PORTS_TEXT => {
                            push(Err(PlanErrorKind::TooLong {
                                found: t.len(),
                                max: MAX_PORTS_TEXT,
                            }))
                        }
                        PortItem::Text(t) => push(parse_token(t.trim())),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(normalize(ranges))
        } else {
            Err(errors)
        }
    }
}

fn single(n: i64) -> Result<PortRange, PlanErrorKind> {
    let p = port(n)?;
    Ok(PortRange { first: p, last: p })
}

fn port(n: i64) -> Result<u16, PlanErrorKind> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(PlanErrorKind::PortOutOfRange(n)),
    }
}

fn number(tok: &str) -> Result<u16, PlanErrorKind> {
    let tok = tok.trim();
    if tok.is_empty() || tok.len() > 12 || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PlanErrorKind::InvalidPort(truncate(tok)));
    }
    // At most 12 digits: fits an i64.
    let n: i64 = tok
        .parse()
        .map_err(|_| PlanErrorKind::InvalidPort(truncate(tok)))?;
    port(n)
}

fn parse_token(tok: &str) -> Result<PortRange, PlanErrorKind> {
    match tok.split_once('-') {
        None => {
            let p = number(tok)?;
            Ok(PortRange { first: p, last: p })
        }
        Some((a, b)) => {
            let (first, last) = (number(a)?, number(b)?);
            if first > last {
                return Err(PlanErrorKind::ReversedPortRange {
                    start: first,
                    end: last,
                });
            }
            Ok(PortRange { first, last })
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Sorts and merges overlapping or adjacent ranges.
pub(crate) fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Number of ports in a normalized list.
pub(crate) fn count(ranges: &[PortRange]) -> usize {
    ranges.iter().map(PortRange::len).sum()
}

impl<'de> Deserialize<'de> for PortsInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortsInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ports as \"80,443,8080-8090\" or [80, 443, \"8080-8090\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PortsInput::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(PortsInput::Items(vec![PortItem::Number(v)]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(PortsInput::Items(vec![PortItem::Number(
                    i64::try_from(v).unwrap_or(i64::MAX),
                )]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<ItemDe>()? {
                    if items.len() >= super::MAX_PORT_ITEMS {
                        return Err(de::Error::custom(format_args!(
                            "too many port items: at most {} are allowed, use ranges such as \"8080-8090\"",
                            super::MAX_PORT_ITEMS
                        )));
                    }
                    items.push(item.0);
                }
                Ok(PortsInput::Items(items))
            }
        }
        d.deserialize_any(V)
    }
}

struct ItemDe(PortItem);

impl<'de> Deserialize<'de> for ItemDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ItemDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a range such as \"8080-8090\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ItemDe(PortItem::Text(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ItemDe(PortItem::Number(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ItemDe(PortItem::Number(
                    i64::try_from(v).unwrap_or(i64::MAX),
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn text_and_items_normalize() {
        let t = PortsInput::Text("443, 80,8080-8090,8085".into()).parse();
        assert_eq!(t, Ok(vec![r(80, 80), r(443, 443), r(8080, 8090)]));
        let i = PortsInput::Items(vec![PortItem::Number(81), PortItem::Text("80".into())]).parse();
        assert_eq!(i, Ok(vec![r(80, 81)]));
    }

    #[test]
    fn bad_ports() {
        assert_eq!(
            PortsInput::Text("0".into()).parse(),
            Err(vec![PlanErrorKind::PortOutOfRange(0)])
        );
        assert_eq!(
            PortsInput::Items(vec![PortItem::Number(65536)]).parse(),
            Err(vec![PlanErrorKind::PortOutOfRange(65536)])
        );
        assert_eq!(
            PortsInput::Text("90-80".into()).parse(),
            Err(vec![PlanErrorKind::ReversedPortRange {
                start: 90,
                end: 80
            }])
        );
        assert_eq!(
            PortsInput::Text("http".into()).parse(),
            Err(vec![PlanErrorKind::InvalidPort("http".into())])
        );
    }
}
