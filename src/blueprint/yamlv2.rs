//! `gopkg.in/yaml.v2` v2.4.0 `Marshal`, for the one shape rcc marshals: a
//! block mapping of strings, lists of strings and lists holding one
//! `{pip: [...]}` map.
//!
//! The blueprint hash is taken over these bytes, so the port follows the Go
//! code closely rather than YAML in general: the resolver that decides
//! whether a string needs quotes (`resolve.go`, `encode.go` `stringv`), and
//! the emitter's scalar analysis, style choice, indentation and the 80
//! column line folding that v2.4.0 still does (`emitterc.go`).

/// A node of the document to marshal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    /// Entries in the order given (yaml.v2 sorts map keys; rcc's maps have
    /// one key and its structs are ordered by field, so the caller decides).
    Map(Vec<(String, Node)>),
}

/// yaml.v2 `Marshal(node)`: the document text, ending with a newline.
pub fn marshal(node: &Node) -> String {
    let mut e = Emitter::new();
    e.node(node, Context::Root);
    // document end (implicit): a line break unless at the start of a line
    e.write_indent();
    String::from_utf8(e.out).expect("emitter writes whole UTF-8 sequences")
}

// ---------------------------------------------------------------------------
// Resolver (resolve.go): would a plain scalar with this text read back as a
// string? If not, `stringv` asks for double quotes.

/// `stringv`'s choice: literal for multi-line text, plain when the text
/// resolves to a string and is no base-60 float, double-quoted otherwise.
fn requested_style(s: &str) -> Style {
    if s.contains('\n') {
        Style::Literal
    } else if resolves_to_str(s) && !is_base60_float(s) {
        Style::Plain
    } else {
        Style::DoubleQuoted
    }
}

/// True when yaml.v2's `resolve("", s)` gives `!!str`.
pub fn resolves_to_str(s: &str) -> bool {
    let b = s.as_bytes();
    let hint = match b.first() {
        None => b'N',
        Some(c) => resolve_hint(*c),
    };
    if hint == 0 {
        return true;
    }
    if RESOLVE_MAP.contains(&s) {
        return false;
    }
    match hint {
        b'M' => true,
        b'.' => go_parse_float(s).is_none(),
        b'D' | b'S' => {
            if is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            if go_parse_int(&plain, 0).is_some() || go_parse_uint(&plain, 0).is_some() {
                return false;
            }
            if is_yaml_style_float(&plain) && go_parse_float(&plain).is_some() {
                return false;
            }
            if let Some(rest) = plain.strip_prefix("0b") {
                if go_parse_int(rest, 2).is_some() || go_parse_uint(rest, 2).is_some() {
                    return false;
                }
            } else if let Some(rest) = plain.strip_prefix("-0b") {
                if go_parse_int(&format!("-{rest}"), 2).is_some() {
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

fn resolve_hint(c: u8) -> u8 {
    match c {
        b'+' | b'-' => b'S',
        b'0'..=b'9' => b'D',
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => b'M',
        b'.' => b'.',
        _ => 0,
    }
}

/// resolve.go's `resolveMap` (every entry is a non-string tag).
const RESOLVE_MAP: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no", "No",
    "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null", "NULL", ".nan",
    ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
    "<<",
];

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// encode.go `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
pub fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if *c == b'+' || *c == b'-' || c.is_ascii_digit() => {}
        _ => return false,
    }
    if !b.contains(&b':') {
        return false;
    }
    let mut i = usize::from(matches!(b[0], b'+' | b'-'));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        // `[0-5]?[0-9]`: one digit, or two with the first in 0-5
        let d1 = b.get(i + 1).is_some_and(u8::is_ascii_digit);
        let d2 = b.get(i + 2).is_some_and(u8::is_ascii_digit);
        if d1 && d2 && (b'0'..=b'5').contains(&b[i + 1]) {
            i += 3;
        } else if d1 {
            i += 2;
        } else {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// Go `strconv.ParseInt(s, base, 64)` succeeds (base 0 = Go literal prefixes).
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(rest, base)?;
    if neg {
        if magnitude <= 1u64 << 63 {
            Some((magnitude as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go `strconv.ParseUint(s, base, 64)` succeeds (no sign accepted).
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    let b = s.as_bytes();
    let (radix, digits) = if base == 0 && b.len() >= 2 && b[0] == b'0' {
        match b[1].to_ascii_lowercase() {
            b'x' => (16, &s[2..]),
            b'o' => (8, &s[2..]),
            b'b' => (2, &s[2..]),
            _ => (8, &s[1..]),
        }
    } else if base == 0 {
        (10, s)
    } else {
        (base, s)
    };
    if digits.is_empty() || !digits.bytes().all(|c| (c as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go `strconv.ParseFloat(s, 64)` succeeds, for the decimal forms the
/// resolver hands it (it is only called on text starting with `.` or
/// matching the YAML float pattern); overflow is an error in Go.
fn go_parse_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let mut mantissa = 0;
    while i < body.len() && body[i].is_ascii_digit() {
        i += 1;
        mantissa += 1;
    }
    if i < body.len() && body[i] == b'.' {
        i += 1;
        while i < body.len() && body[i].is_ascii_digit() {
            i += 1;
            mantissa += 1;
        }
    }
    if mantissa == 0 {
        return None;
    }
    if i < body.len() && (body[i] == b'e' || body[i] == b'E') {
        i += 1;
        if i < body.len() && (body[i] == b'+' || body[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < body.len() && body[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != body.len() {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// resolve.go `parseTimestamp`: the four layouts yaml.v2 tries with Go's
/// `time.Parse`. (Such text decodes as a string into a Go `interface{}`,
/// but is quoted on output.)
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let lead = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if lead != 4 || b.len() == 4 || b[4] != b'-' {
        return false;
    }
    [
        TsLayout::DateTime(b'T'),
        TsLayout::DateTime(b't'),
        TsLayout::SpaceTime,
        TsLayout::Date,
    ]
    .iter()
    .any(|l| l.parses(b))
}

#[derive(Clone, Copy)]
enum TsLayout {
    /// `2006-1-2T15:4:5.999999999Z07:00` (or lower-case `t`)
    DateTime(u8),
    /// `2006-1-2 15:4:5.999999999`
    SpaceTime,
    /// `2006-1-2`
    Date,
}

impl TsLayout {
    fn parses(self, v: &[u8]) -> bool {
        let mut p = Cursor { v, i: 0 };
        let Some(year) = p.fixed(4) else { return false };
        if !p.lit(b'-') {
            return false;
        }
        let Some(month) = p.num12() else { return false };
        if !(1..=12).contains(&month) || !p.lit(b'-') {
            return false;
        }
        let Some(day) = p.num12() else { return false };
        match self {
            TsLayout::Date => {}
            TsLayout::DateTime(t) => {
                if !p.lit(t) || !p.clock() || !p.zone() {
                    return false;
                }
            }
            TsLayout::SpaceTime => {
                // a layout space matches any run of spaces (Go's `skip`)
                if p.i < v.len() && v[p.i] != b' ' {
                    return false;
                }
                while p.i < v.len() && v[p.i] == b' ' {
                    p.i += 1;
                }
                if !p.clock() {
                    return false;
                }
            }
        }
        p.i == v.len() && day >= 1 && day <= days_in(month, year)
    }
}

struct Cursor<'a> {
    v: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn fixed(&mut self, n: usize) -> Option<u32> {
        let part = self.v.get(self.i..self.i + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(part.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0')))
    }
    /// Go `getnum(value, false)`: one or two digits.
    fn num12(&mut self) -> Option<u32> {
        let d = |k: usize| self.v.get(k).filter(|c| c.is_ascii_digit()).copied();
        let first = d(self.i)?;
        if let Some(second) = d(self.i + 1) {
            self.i += 2;
            Some(u32::from(first - b'0') * 10 + u32::from(second - b'0'))
        } else {
            self.i += 1;
            Some(u32::from(first - b'0'))
        }
    }
    fn lit(&mut self, c: u8) -> bool {
        if self.v.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// `15:4:5.999999999`
    fn clock(&mut self) -> bool {
        let Some(h) = self.num12() else { return false };
        if h >= 24 || !self.lit(b':') {
            return false;
        }
        let Some(m) = self.num12() else { return false };
        if m >= 60 || !self.lit(b':') {
            return false;
        }
        let Some(s) = self.num12() else { return false };
        if s >= 60 {
            return false;
        }
        // optional fraction: `.` or `,` then at least one digit
        if matches!(self.v.get(self.i), Some(b'.' | b','))
            && self.v.get(self.i + 1).is_some_and(u8::is_ascii_digit)
        {
            self.i += 1;
            while self.v.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
        }
        true
    }
    /// `Z07:00`: `Z`, or `±hh:mm`.
    fn zone(&mut self) -> bool {
        if self.lit(b'Z') {
            return true;
        }
        let rest = &self.v[self.i..];
        if rest.len() < 6 || rest[3] != b':' || !matches!(rest[0], b'+' | b'-') {
            return false;
        }
        let two = |a: u8, b: u8| {
            (a.is_ascii_digit() && b.is_ascii_digit())
                .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        };
        match (two(rest[1], rest[2]), two(rest[4], rest[5])) {
            (Some(h), Some(m)) if h <= 24 && m <= 60 => {
                self.i += 6;
                true
            }
            _ => false,
        }
    }
}

fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------
// Emitter (emitterc.go), reduced to block context and the events above.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
}

#[derive(Clone, Copy)]
enum Context {
    Root,
    SeqItem,
    MapKey,
    MapValue,
}

const BEST_INDENT: i32 = 2;
/// v2.4.0 reverted v2.3.0's unlimited width: lines fold after column 80.
const BEST_WIDTH: i32 = 80;

struct Emitter {
    out: Vec<u8>,
    column: i32,
    indent: i32,
    indents: Vec<i32>,
    whitespace: bool,
    indention: bool,
    mapping_context: bool,
    simple_key_context: bool,
}

/// What `yaml_emitter_analyze_scalar` found out about a value.
struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

impl Emitter {
    fn new() -> Self {
        Emitter {
            out: Vec::new(),
            column: 0,
            indent: -1,
            indents: Vec::new(),
            whitespace: true,
            indention: true,
            mapping_context: false,
            simple_key_context: false,
        }
    }

    fn node(&mut self, node: &Node, ctx: Context) {
        self.mapping_context = matches!(ctx, Context::MapKey | Context::MapValue);
        self.simple_key_context = matches!(ctx, Context::MapKey);
        match node {
            Node::Scalar(s) => self.scalar(s),
            Node::Seq(items) if items.is_empty() => self.empty_flow(b"[", b"]"),
            Node::Map(entries) if entries.is_empty() => self.empty_flow(b"{", b"}"),
            Node::Seq(items) => {
                let indentless = self.mapping_context && !self.indention;
                self.increase_indent(false, indentless);
                for item in items {
                    self.write_indent();
                    self.write_indicator(b"-", true, false, true);
                    self.node(item, Context::SeqItem);
                }
                self.pop_indent();
            }
            Node::Map(entries) => {
                self.increase_indent(false, false);
                for (key, value) in entries {
                    self.write_indent();
                    // rcc's keys are short plain words: always simple keys
                    self.node(&Node::Scalar(key.clone()), Context::MapKey);
                    self.write_indicator(b":", false, false, false);
                    self.node(value, Context::MapValue);
                }
                self.pop_indent();
            }
        }
    }

    fn empty_flow(&mut self, open: &[u8], close: &[u8]) {
        self.write_indicator(open, true, true, false);
        self.increase_indent(true, false);
        self.pop_indent();
        self.write_indicator(close, false, false, false);
    }

    fn scalar(&mut self, s: &str) {
        let value = s.as_bytes();
        let a = analyze(value);
        let mut style = requested_style(s);
        if self.simple_key_context && a.multiline {
            style = Style::DoubleQuoted;
        }
        if style == Style::Plain
            && (!a.block_plain_allowed || (value.is_empty() && self.simple_key_context))
        {
            style = Style::SingleQuoted;
        }
        if style == Style::SingleQuoted && !a.single_quoted_allowed {
            style = Style::DoubleQuoted;
        }
        if style == Style::Literal && (!a.block_allowed || self.simple_key_context) {
            style = Style::DoubleQuoted;
        }
        self.increase_indent(true, false);
        let allow_breaks = !self.simple_key_context;
        match style {
            Style::Plain => self.write_plain(value, allow_breaks),
            Style::SingleQuoted => self.write_single_quoted(value, allow_breaks),
            Style::DoubleQuoted => self.write_double_quoted(value, allow_breaks),
            Style::Literal => self.write_literal(value),
        }
        self.pop_indent();
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn put(&mut self, c: u8) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push(b'\n');
        self.column = 0;
    }

    /// Copy one (possibly multi-byte) character.
    fn write(&mut self, s: &[u8], i: &mut usize) {
        let w = width(s[*i]).max(1);
        self.out.extend_from_slice(&s[*i..(*i + w).min(s.len())]);
        self.column += 1;
        *i += w;
    }

    fn write_break(&mut self, s: &[u8], i: &mut usize) {
        if s[*i] == b'\n' {
            self.put_break();
            *i += 1;
        } else {
            self.write(s, i);
            self.column = 0;
        }
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(b' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn write_indicator(
        &mut self,
        ind: &[u8],
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(b' ');
        }
        let mut i = 0;
        while i < ind.len() {
            self.write(ind, &mut i);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    fn write_plain(&mut self, v: &[u8], allow_breaks: bool) {
        if !self.whitespace {
            self.put(b' ');
        }
        let (mut spaces, mut breaks) = (false, false);
        let mut i = 0;
        while i < v.len() {
            if is_space(v, i) {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && !is_space(v, i + 1) {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(v, &mut i);
                }
                spaces = true;
            } else if is_break(v, i) {
                if !breaks && v[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(v, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(v, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_single_quoted(&mut self, v: &[u8], allow_breaks: bool) {
        self.write_indicator(b"'", true, false, false);
        let (mut spaces, mut breaks) = (false, false);
        let mut i = 0;
        while i < v.len() {
            if is_space(v, i) {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < v.len() - 1
                    && !is_space(v, i + 1)
                {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(v, &mut i);
                }
                spaces = true;
            } else if is_break(v, i) {
                if !breaks && v[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(v, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if v[i] == b'\'' {
                    self.put(b'\'');
                }
                self.write(v, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator(b"'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double_quoted(&mut self, v: &[u8], allow_breaks: bool) {
        let mut spaces = false;
        self.write_indicator(b"\"", true, false, false);
        let mut i = 0;
        while i < v.len() {
            if !is_printable(v, i)
                || is_bom(v, i)
                || is_break(v, i)
                || v[i] == b'"'
                || v[i] == b'\\'
            {
                let w = width(v[i]).max(1);
                let ch = std::str::from_utf8(&v[i..(i + w).min(v.len())])
                    .ok()
                    .and_then(|t| t.chars().next())
                    .map(u32::from)
                    .unwrap_or(u32::from(v[i]));
                i += w;
                self.put(b'\\');
                let short = match ch {
                    0x00 => Some(b'0'),
                    0x07 => Some(b'a'),
                    0x08 => Some(b'b'),
                    0x09 => Some(b't'),
                    0x0A => Some(b'n'),
                    0x0B => Some(b'v'),
                    0x0C => Some(b'f'),
                    0x0D => Some(b'r'),
                    0x1B => Some(b'e'),
                    0x22 => Some(b'"'),
                    0x5C => Some(b'\\'),
                    0x85 => Some(b'N'),
                    0xA0 => Some(b'_'),
                    0x2028 => Some(b'L'),
                    0x2029 => Some(b'P'),
                    _ => None,
                };
                match short {
                    Some(c) => self.put(c),
                    None => {
                        let (letter, digits) = if ch <= 0xFF {
                            (b'x', 2)
                        } else if ch <= 0xFFFF {
                            (b'u', 4)
                        } else {
                            (b'U', 8)
                        };
                        self.put(letter);
                        for k in (0..digits).rev() {
                            let d = ((ch >> (k * 4)) & 0xF) as u8;
                            self.put(if d < 10 { b'0' + d } else { b'A' + d - 10 });
                        }
                    }
                }
                spaces = false;
            } else if is_space(v, i) {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i > 0 && i < v.len() - 1 {
                    self.write_indent();
                    if is_space(v, i + 1) {
                        self.put(b'\\');
                    }
                    i += 1;
                } else {
                    self.write(v, &mut i);
                }
                spaces = true;
            } else {
                self.write(v, &mut i);
                spaces = false;
            }
        }
        self.write_indicator(b"\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, v: &[u8]) {
        self.write_indicator(b"|", true, false, false);
        // block scalar hints: explicit indentation, chomping
        if is_space(v, 0) || is_break(v, 0) {
            self.write_indicator(&[b'0' + BEST_INDENT as u8], false, false, false);
        }
        let chomp = if v.is_empty() {
            Some(b'-')
        } else {
            let mut i = v.len() - 1;
            while i > 0 && v[i] & 0xC0 == 0x80 {
                i -= 1;
            }
            if !is_break(v, i) {
                Some(b'-')
            } else if i == 0 {
                Some(b'+')
            } else {
                i -= 1;
                while i > 0 && v[i] & 0xC0 == 0x80 {
                    i -= 1;
                }
                is_break(v, i).then_some(b'+')
            }
        };
        if let Some(c) = chomp {
            self.write_indicator(&[c], false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        let mut i = 0;
        while i < v.len() {
            if is_break(v, i) {
                self.write_break(v, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(v, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// `yaml_emitter_analyze_scalar`, keeping what block context needs.
fn analyze(value: &[u8]) -> Analysis {
    if value.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let mut block_indicators = false;
    let (mut line_breaks, mut special_characters) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);

    if value.len() >= 3 && (value.starts_with(b"---") || value.starts_with(b"...")) {
        block_indicators = true;
    }
    let mut preceded_by_whitespace = true;
    let mut i = 0;
    while i < value.len() {
        let w = width(value[i]).max(1);
        let followed_by_whitespace = i + w >= value.len() || is_blank(value, i + w);
        if i == 0 {
            match value[i] {
                b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>'
                | b'\'' | b'"' | b'%' | b'@' | b'`' => block_indicators = true,
                b'?' | b':' | b'-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match value[i] {
                b':' if followed_by_whitespace => block_indicators = true,
                b'#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(value, i) {
            special_characters = true;
        }
        if is_space(value, i) {
            if i == 0 {
                leading_space = true;
            }
            if i + w == value.len() {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(value, i) {
            line_breaks = true;
            if i == 0 {
                leading_break = true;
            }
            if i + w == value.len() {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_blankz(value, i);
        i += w;
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special_characters {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

// yamlprivateh.go character classes, over UTF-8 bytes.

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn width(c: u8) -> usize {
    if c & 0x80 == 0 {
        1
    } else if c & 0xE0 == 0xC0 {
        2
    } else if c & 0xF0 == 0xE0 {
        3
    } else if c & 0xF8 == 0xF0 {
        4
    } else {
        0
    }
}

fn is_printable(b: &[u8], i: usize) -> bool {
    let (c0, c1, c2) = (at(b, i), at(b, i + 1), at(b, i + 2));
    c0 == 0x0A
        || (0x20..=0x7E).contains(&c0)
        || (c0 == 0xC2 && c1 >= 0xA0)
        || (c0 > 0xC2 && c0 < 0xED)
        || (c0 == 0xED && c1 < 0xA0)
        || c0 == 0xEE
        || (c0 == 0xEF
            && !(c1 == 0xBB && c2 == 0xBF)
            && !(c1 == 0xBF && (c2 == 0xBE || c2 == 0xBF)))
}

fn is_bom(b: &[u8], i: usize) -> bool {
    at(b, i) == 0xEF && at(b, i + 1) == 0xBB && at(b, i + 2) == 0xBF
}

fn is_space(b: &[u8], i: usize) -> bool {
    at(b, i) == b' '
}

fn is_blank(b: &[u8], i: usize) -> bool {
    matches!(at(b, i), b' ' | b'\t')
}

fn is_break(b: &[u8], i: usize) -> bool {
    let (c0, c1, c2) = (at(b, i), at(b, i + 1), at(b, i + 2));
    c0 == b'\r'
        || c0 == b'\n'
        || (c0 == 0xC2 && c1 == 0x85)
        || (c0 == 0xE2 && c1 == 0x80 && (c2 == 0xA8 || c2 == 0xA9))
}

fn is_blankz(b: &[u8], i: usize) -> bool {
    is_blank(b, i) || is_break(b, i) || at(b, i) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(s: &str) -> String {
        let doc = Node::Map(vec![("k".into(), Node::Seq(vec![Node::Scalar(s.into())]))]);
        let out = marshal(&doc);
        out.strip_prefix("k:\n- ")
            .unwrap_or(&out)
            .trim_end_matches('\n')
            .to_string()
    }

    #[test]
    fn plain_when_it_reads_back_as_a_string() {
        for s in [
            "conda-forge",
            "python=3.9.13",
            "a b",
            "x:y",
            "a#b",
            "-x",
            "?x",
            "<<",
            "x~",
            "yess",
            "nulls",
            "2023c",
        ] {
            assert_eq!(item(s), s, "{s:?}");
        }
    }

    #[test]
    fn double_quoted_when_it_would_read_back_as_something_else() {
        for s in [
            "",
            "1.0",
            "1",
            "-1",
            "+1",
            "0x1F",
            "0777",
            "0b101",
            "1_000",
            ".5",
            "1e5",
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "n",
            "true",
            "False",
            "null",
            "~",
            "NULL",
            ".inf",
            "-.Inf",
            ".NaN",
            "1:20",
            "2001-01-01",
            "2001-1-2 3:04:05",
            "2001-01-01T10:00:00Z",
            "2001-01-01t10:00:00.5+02:00",
        ] {
            assert_eq!(item(s), format!("\"{s}\""), "{s:?}");
        }
    }

    #[test]
    fn almost_numbers_stay_plain() {
        // overflowing floats, invalid dates, 4-digit years without a dash
        for s in [
            "1e400",
            "2001-02-30",
            "2001-13-01",
            "1.2.3",
            "0x",
            "08x",
            "1:60",
            "+inf",
            ".5.5",
        ] {
            assert_eq!(item(s), s, "{s:?}");
        }
        assert_eq!(item("2000-02-29"), "\"2000-02-29\"");
        assert_eq!(item("1900-02-29"), "1900-02-29");
    }

    #[test]
    fn single_quoted_when_plain_is_not_allowed() {
        assert_eq!(item("*star"), "'*star'");
        assert_eq!(item("&amp"), "'&amp'");
        assert_eq!(item("a: b"), "'a: b'");
        assert_eq!(item("a #b"), "'a #b'");
        assert_eq!(item("- x"), "'- x'");
        assert_eq!(item(" lead"), "' lead'");
        assert_eq!(item("trail "), "'trail '");
        assert_eq!(item("it's: x"), "'it''s: x'");
        assert_eq!(item("x:"), "'x:'");
        assert_eq!(item("%x"), "'%x'");
        assert_eq!(item("@x"), "'@x'");
        assert_eq!(item("`x"), "'`x'");
        assert_eq!(item("---"), "'---'");
        assert_eq!(item("[a]"), "'[a]'");
    }

    #[test]
    fn double_quoted_for_special_characters() {
        assert_eq!(item("a\tb"), "\"a\\tb\"");
        assert_eq!(item("bell\u{7}"), "\"bell\\a\"");
        assert_eq!(item("emoji \u{1F600}"), "\"emoji \\U0001F600\"");
        assert_eq!(item("caf\u{e9}"), "caf\u{e9}");
        assert_eq!(item("cr\rx"), "\"cr\\rx\"");
    }

    #[test]
    fn multi_line_is_literal() {
        assert_eq!(item("a\nb"), "|-\n  a\n  b");
        assert_eq!(item("a\nb\n"), "|\n  a\n  b");
        assert_eq!(item("a\n\nb"), "|-\n  a\n\n  b");
        assert_eq!(item(" a\nb"), "|2-\n   a\n  b");
        assert_eq!(item("a\n\n"), "|+\n  a");
        // trailing space forbids the block style
        assert_eq!(item("a \nb"), "\"a \\nb\"");
    }

    #[test]
    fn long_plain_lines_fold_after_column_80() {
        let words: Vec<String> = (0..30).map(|i| format!("word{i:02}")).collect();
        let s = words.join(" ");
        let out = item(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 1, "{out}");
        // "- " + text; the break replaces the first space after column 80
        assert!(lines[0].len() > 80 && lines[0].len() <= 80 + 7, "{out}");
        assert!(lines[1].starts_with("  word"), "{out}");
        assert_eq!(out.replace("\n  ", " "), s);
    }

    #[test]
    fn document_shape() {
        let doc = Node::Map(vec![
            ("channels".into(), Node::Seq(vec![])),
            (
                "dependencies".into(),
                Node::Seq(vec![
                    Node::Scalar("python".into()),
                    Node::Map(vec![(
                        "pip".into(),
                        Node::Seq(vec![Node::Scalar("a==1".into())]),
                    )]),
                ]),
            ),
            ("name".into(), Node::Scalar("x".into())),
        ]);
        assert_eq!(
            marshal(&doc),
            "channels: []\ndependencies:\n- python\n- pip:\n  - a==1\nname: x\n"
        );
    }
}
