//! HTTP/1.1 messages as the ingress relays them: request and response heads
//! parsed by httparse into ranges of the bytes received (nothing is copied),
//! the body-length rules of RFC 9112 §6, and the chunked transfer coding.
//!
//! Everything the proxy must treat specially is found in one pass over the
//! fields: framing (`Content-Length`, `Transfer-Encoding`), connection
//! management (`Connection` and what it lists), `Host`, `Upgrade`, `Expect`
//! and the forwarding fields the ingress rewrites. Ambiguous framing, the
//! raw material of request smuggling, is refused rather than guessed at.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Header fields one message may carry.
pub const MAX_FIELDS: usize = 128;

/// The fields the ingress treats specially; the rest are relayed as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    ContentLength,
    Host,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    Other,
}

impl Known {
    fn of(name: &[u8]) -> Self {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Known::Te,
            4 if is("host") => Known::Host,
            6 if is("expect") => Known::Expect,
            7 if is("trailer") => Known::Trailer,
            7 if is("upgrade") => Known::Upgrade,
            10 if is("connection") => Known::Connection,
            10 if is("keep-alive") => Known::KeepAlive,
            12 if is("x-request-id") => Known::XRequestId,
            14 if is("content-length") => Known::ContentLength,
            15 if is("x-forwarded-for") => Known::XForwardedFor,
            16 if is("proxy-connection") => Known::ProxyConnection,
            16 if is("x-forwarded-host") => Known::XForwardedHost,
            17 if is("transfer-encoding") => Known::TransferEncoding,
            17 if is("x-forwarded-proto") => Known::XForwardedProto,
            _ => Known::Other,
        }
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1), which never cross the proxy as
    /// they are; the framing is redone by the ingress too.
    pub fn hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
        )
    }
}

/// One header field: where its name and value are in the head.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub known: Known,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a head cannot be relayed; each maps onto the status the ingress
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("{0}")]
    Malformed(String),
    #[error("the request has more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("{0}")]
    NotImplemented(String),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooManyFields => 431,
            HeadError::NotImplemented(_) => 501,
        }
    }
}

/// What the `Connection` fields of a message say.
#[derive(Debug, Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other field names listed: hop-by-hop for this message.
    listed: Vec<Range<usize>>,
}

impl ConnectionTokens {
    fn read(&mut self, raw: &[u8], value: &Range<usize>) {
        for token in split_list(raw, value) {
            let name = &raw[token.clone()];
            if name.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if name.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.listed.push(token);
            }
        }
    }
}

/// The non-empty, trimmed items of a comma-separated field value.
fn split_list<'a>(raw: &'a [u8], value: &Range<usize>) -> impl Iterator<Item = Range<usize>> + 'a {
    let mut start = value.start;
    let end = value.end;
    std::iter::from_fn(move || {
        while start < end {
            let item_end = raw[start..end].iter().position(|&b| b == b',').map_or(end, |i| start + i);
            let mut a = start;
            let mut b = item_end;
            start = item_end + 1;
            while a < b && matches!(raw[a], b' ' | b'\t') {
                a += 1;
            }
            while b > a && matches!(raw[b - 1], b' ' | b'\t') {
                b -= 1;
            }
            if a < b {
                return Some(a..b);
            }
        }
        None
    })
}

/// A `Content-Length` value: digits only; a list must repeat one value.
fn content_length(raw: &[u8], value: &Range<usize>) -> Option<u64> {
    let mut length = None;
    for item in split_list(raw, value) {
        let digits = &raw[item];
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// The codings of `Transfer-Encoding` fields: whether the last is chunked,
/// and the first other coding named, if any.
fn transfer_codings<'a>(raw: &'a [u8], values: &[Range<usize>]) -> (bool, Option<&'a [u8]>) {
    let mut last_chunked = false;
    let mut other = None;
    for value in values {
        for coding in split_list(raw, value) {
            let coding = &raw[coding];
            last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if !last_chunked && other.is_none() {
                other = Some(coding);
            }
        }
    }
    (last_chunked, other)
}

/// Offsets of httparse's slices in the buffer they were parsed from.
fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

fn fields_of(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| Field {
            name: range_in(base, h.name.as_bytes()),
            value: range_in(base, h.value),
            known: Known::of(h.name.as_bytes()),
        })
        .collect()
}

/// A request head, as received.
#[derive(Debug)]
pub struct RequestHead {
    pub raw: Bytes,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub fields: Vec<Field>,
    /// The host asked for: the authority of an absolute-form target, else `Host`.
    pub host: Option<Range<usize>>,
    /// The target in origin form (`/path?query`).
    pub path: Range<usize>,
    /// Whether `path` needs a leading `/` (an absolute-form target with none).
    pub path_needs_slash: bool,
    pub body: BodyLength,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// The protocol asked for by a `Connection: upgrade` request.
    pub upgrade: Option<Range<usize>>,
    pub expect_continue: bool,
    /// Field names listed in `Connection`, removed when relaying.
    pub listed: Vec<Range<usize>>,
}

impl RequestHead {
    pub fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.raw[range.clone()]
    }

    pub fn method(&self) -> &[u8] {
        self.bytes(&self.method)
    }

    /// The path, without its query, for routing.
    pub fn route_path(&self) -> &str {
        let path = self.bytes(&self.path);
        let path = path.iter().position(|&b| b == b'?').map_or(path, |i| &path[..i]);
        let path = std::str::from_utf8(path).unwrap_or("/");
        if self.path_needs_slash || path.is_empty() { "/" } else { path }
    }

    /// Whether `name` is listed in the request's `Connection` fields.
    pub fn is_listed(&self, name: &[u8]) -> bool {
        self.listed.iter().any(|r| self.raw[r.clone()].eq_ignore_ascii_case(name))
    }

    /// Whether a replay of the request has the same effect (RFC 9110 §9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(self.method(), b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE")
    }
}

/// Parses a request head from the front of `buf`, taking its bytes out;
/// `None` while the head is incomplete.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialised: filling 128 empty fields first would cost more than
    // parsing a typical head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(error) => return Err(HeadError::Malformed(format!("malformed request head: {error}"))),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version) else {
        return Err(HeadError::Malformed("malformed request line".to_owned()));
    };
    let base: &[u8] = buf;
    let method = range_in(base, method.as_bytes());
    let target = range_in(base, target.as_bytes());
    let fields = fields_of(base, request.headers);
    let raw = buf.split_to(len).freeze();
    request_head(raw, method, target, minor, fields).map(Some)
}

fn request_head(
    raw: Bytes,
    method: Range<usize>,
    target: Range<usize>,
    minor: u8,
    fields: Vec<Field>,
) -> Result<RequestHead, HeadError> {
    let malformed = |message: &str| Err(HeadError::Malformed(message.to_owned()));
    if &raw[method.clone()] == b"CONNECT" {
        return Err(HeadError::NotImplemented("CONNECT is not supported by the ingress".to_owned()));
    }
    let mut connection = ConnectionTokens::default();
    let (mut host, mut length, mut upgrade, mut expect_continue) = (None, None, None, false);
    let mut codings = Vec::new();
    for field in &fields {
        match field.known {
            Known::Connection => connection.read(&raw, &field.value),
            Known::Host if host.is_some() => return malformed("the request has more than one Host field"),
            Known::Host => host = Some(field.value.clone()),
            Known::ContentLength => match content_length(&raw, &field.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return malformed("the request's Content-Length is not one number"),
            },
            Known::TransferEncoding => codings.push(field.value.clone()),
            Known::Upgrade => upgrade = Some(field.value.clone()),
            Known::Expect => expect_continue = raw[field.value.clone()].eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
    }

    // An absolute-form target names the host itself (RFC 9112 §3.2.2).
    let mut path = target.clone();
    let mut path_needs_slash = false;
    let target_bytes = &raw[target.clone()];
    if target_bytes.len() > 7 && target_bytes[..7].eq_ignore_ascii_case(b"http://") {
        let rest = target.start + 7;
        let end = raw[rest..target.end].iter().position(|&b| b == b'/' || b == b'?').map_or(target.end, |i| rest + i);
        let authority = rest..end;
        if authority.is_empty() {
            return malformed("the request target names no host");
        }
        host = Some(authority);
        path = end..target.end;
        path_needs_slash = raw.get(end) != Some(&b'/');
    } else if target_bytes.first() != Some(&b'/') && target_bytes != b"*" {
        return malformed("the request target must be a path or an http:// URL");
    }
    if host.as_ref().is_none_or(Range::is_empty) {
        return malformed("the request names no host");
    }

    let body = if codings.is_empty() {
        length.map_or(BodyLength::None, BodyLength::Length)
    } else {
        if minor == 0 {
            return malformed("Transfer-Encoding is not allowed in an HTTP/1.0 request");
        }
        if length.is_some() {
            return malformed("the request has both Content-Length and Transfer-Encoding");
        }
        match transfer_codings(&raw, &codings) {
            (true, None) => BodyLength::Chunked,
            (true, Some(other)) => {
                return Err(HeadError::NotImplemented(format!(
                    "transfer coding {:?} is not supported",
                    String::from_utf8_lossy(other)
                )));
            }
            (false, _) => return malformed("the request's last transfer coding is not chunked"),
        }
    };
    let close = if minor == 0 { !connection.keep_alive } else { connection.close };
    let upgrade = upgrade.filter(|_| connection.upgrade && minor == 1);
    Ok(RequestHead {
        raw,
        method,
        target,
        minor,
        fields,
        host,
        path,
        path_needs_slash,
        body,
        close,
        upgrade,
        expect_continue,
        listed: connection.listed,
    })
}

/// A response head, as received from an app.
#[derive(Debug)]
pub struct ResponseHead {
    pub raw: Bytes,
    pub code: u16,
    pub reason: Range<usize>,
    pub minor: u8,
    pub fields: Vec<Field>,
    pub body: BodyLength,
    /// The app will close the connection after this response.
    pub close: bool,
    pub listed: Vec<Range<usize>>,
    /// The raw `Content-Length` value (kept for HEAD and 304 answers).
    pub content_length: Option<Range<usize>>,
}

impl ResponseHead {
    pub fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.raw[range.clone()]
    }

    pub fn is_listed(&self, name: &[u8]) -> bool {
        self.listed.iter().any(|r| self.raw[r.clone()].eq_ignore_ascii_case(name))
    }
}

/// Parses a response head from the front of `buf`, taking its bytes out.
/// `head_request` says whether it answers a HEAD request (no body follows).
pub fn parse_response(buf: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, String> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut headers);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("malformed response head: {error}")),
    };
    let (Some(code), Some(minor)) = (response.code, response.version) else {
        return Err("malformed status line".to_owned());
    };
    let base: &[u8] = buf;
    let reason = response.reason.filter(|r| !r.is_empty()).map_or(0..0, |r| range_in(base, r.as_bytes()));
    let fields = fields_of(base, response.headers);
    let raw = buf.split_to(len).freeze();

    let mut connection = ConnectionTokens::default();
    let (mut length, mut content_length, mut codings) = (None, None, Vec::new());
    for field in &fields {
        match field.known {
            Known::Connection => connection.read(&raw, &field.value),
            Known::ContentLength => {
                content_length = Some(field.value.clone());
                match content_length_of(&raw, &field.value, length) {
                    Some(n) => length = Some(n),
                    None => return Err("the app's Content-Length is not one number".to_owned()),
                }
            }
            Known::TransferEncoding => codings.push(field.value.clone()),
            _ => {}
        }
    }
    let body = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        BodyLength::None
    } else if !codings.is_empty() {
        match transfer_codings(&raw, &codings) {
            (true, None) => BodyLength::Chunked,
            (true, Some(other)) => {
                return Err(format!(
                    "the app used transfer coding {:?}, which the ingress does not relay",
                    String::from_utf8_lossy(other)
                ));
            }
            (false, _) => BodyLength::UntilClose,
        }
    } else {
        match length {
            Some(n) => BodyLength::Length(n),
            None => BodyLength::UntilClose,
        }
    };
    let close = if minor == 0 { !connection.keep_alive } else { connection.close };
    Ok(Some(ResponseHead {
        raw,
        code,
        reason,
        minor,
        fields,
        body,
        close: close || body == BodyLength::UntilClose,
        listed: connection.listed,
        content_length,
    }))
}

fn content_length_of(raw: &[u8], value: &Range<usize>, earlier: Option<u64>) -> Option<u64> {
    content_length(raw, value).filter(|n| earlier.is_none_or(|l| l == *n))
}

/// Decoding of the chunked transfer coding (RFC 9112 §7.1), strict about
/// line ends. Chunk extensions and trailer fields are read and dropped: the
/// ingress re-encodes what it relays.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes left of the current chunk, or the size being read.
    size: u64,
    digits: u8,
    /// Bytes of extensions and trailers seen, bounded.
    overhead: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Extensions and trailers one body may carry.
const MAX_CHUNK_OVERHEAD: usize = 16 * 1024;

impl ChunkedDecoder {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads from `input`, passing each run of data to `data`. Returns how
    /// many bytes of `input` belong to the body; stops at its end.
    pub fn decode(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let byte = input[i];
            match self.state {
                Size => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 15 {
                            return Err("chunk size too large");
                        }
                        let digit = (byte as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(digit);
                        self.digits += 1;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err("invalid chunk size"),
                },
                Extension => match byte {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err("bare LF in chunk extension"),
                    _ => self.overhead_byte()?,
                },
                SizeLf if byte == b'\n' => {
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(input.len() - i);
                    data(&input[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if byte == b'\r' => self.state = DataLf,
                DataLf if byte == b'\n' => self.state = Size,
                TrailerStart if byte == b'\r' => self.state = EndLf,
                TrailerStart | Trailer if byte != b'\r' && byte != b'\n' => {
                    self.overhead_byte()?;
                    self.state = Trailer;
                }
                Trailer if byte == b'\r' => self.state = TrailerLf,
                TrailerLf if byte == b'\n' => self.state = TrailerStart,
                EndLf if byte == b'\n' => self.state = Done,
                _ => return Err("malformed chunked body"),
            }
            i += 1;
        }
        Ok(i)
    }

    fn overhead_byte(&mut self) -> Result<(), &'static str> {
        self.overhead += 1;
        if self.overhead > MAX_CHUNK_OVERHEAD { Err("chunk extensions or trailers too large") } else { Ok(()) }
    }
}

/// Appends `data` as one chunk.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_number(out, data.len() as u64, 16);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in base 10 or 16, without going through `fmt`.
pub fn push_number(out: &mut Vec<u8>, mut n: u64, base: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % base) as usize];
        n /= base;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(text))
    }

    #[test]
    fn request_heads_give_host_path_and_framing() {
        let head = request("POST /a/b?x=1 HTTP/1.1\r\nHost: Shop.Example.test:8080\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.bytes(head.host.as_ref().unwrap()), b"Shop.Example.test:8080");
        assert_eq!(head.route_path(), "/a/b");
        assert_eq!(head.body, BodyLength::Length(5));
        assert!(!head.close && !head.idempotent());

        let mut buf = BytesMut::from("GET http://other.test?q HTTP/1.1\r\nHost: ignored\r\n\r\nGET / HTTP/1.1\r\n");
        let head = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(head.bytes(head.host.as_ref().unwrap()), b"other.test");
        assert!(head.path_needs_slash);
        assert_eq!(head.route_path(), "/");
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n", "a pipelined request stays in the buffer");
        assert!(parse_request(&mut buf).unwrap().is_none(), "incomplete");

        let head = request("GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert!(head.close, "HTTP/1.0 closes unless asked to keep alive");
        let head = request("GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(!head.close);
        let head = request(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Secret\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.bytes(head.upgrade.as_ref().unwrap()), b"websocket");
        assert!(head.is_listed(b"x-secret") && !head.is_listed(b"host"));
        let head = request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body, BodyLength::Chunked);
        assert!(head.expect_continue && head.idempotent());
    }

    #[test]
    fn ambiguous_or_unsupported_requests_are_refused() {
        let status = |text: &str| request(text).unwrap_err().status();
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "no host");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400,
            "both framings: the smuggling case"
        );
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
        assert_eq!(status("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"), 400);
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), 431);
        let head = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, BodyLength::Length(3), "a repeated equal length is one length");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let response = |text: &str, head: bool| parse_response(&mut BytesMut::from(text), head).unwrap().unwrap();
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false);
        assert_eq!((r.code, r.body, r.close), (200, BodyLength::Length(12), false));
        assert_eq!(r.bytes(&r.reason), b"OK");
        assert_eq!(response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).body, BodyLength::None);
        assert_eq!(response("HTTP/1.1 204 No Content\r\n\r\n", false).body, BodyLength::None);
        assert_eq!(response("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false).body, BodyLength::None);
        let r = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!(r.body, BodyLength::Chunked, "chunked wins over a length");
        let r = response("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!((r.body, r.close), (BodyLength::UntilClose, true));
        let r = response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!r.close);
        assert!(response("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false).close);
        assert!(parse_response(&mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), false).is_err());
        assert!(parse_response(&mut BytesMut::from("HTTP/1.1 200 OK\r\n"), false).unwrap().is_none());
    }

    fn dechunk(input: &[u8]) -> Result<(Vec<u8>, usize, bool), &'static str> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = decoder.decode(input, |d| out.extend_from_slice(d))?;
        Ok((out, used, decoder.done()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let (data, used, done) = dechunk(body).unwrap();
        assert_eq!((data.as_slice(), used, done), (&b"hello world"[..], body.len() - 4, true));
        // Byte by byte gives the same.
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        for byte in &body[..body.len() - 4] {
            assert_eq!(decoder.decode(std::slice::from_ref(byte), |d| out.extend_from_slice(d)).unwrap(), 1);
        }
        assert!(decoder.done());
        assert_eq!(out, b"hello world");
        assert!(dechunk(b"5\nhello\r\n").is_err(), "bare LF");
        assert!(dechunk(b"x\r\n").is_err());
        assert!(dechunk(b"5\r\nhelloXX").is_err(), "data longer than its size");
        assert!(dechunk(b"ffffffffffffffff0\r\n").is_err(), "size overflow");
        let (_, _, done) = dechunk(b"3\r\nabc\r\n").unwrap();
        assert!(!done);

        let mut numbers = Vec::new();
        for (n, base) in [(0, 10), (7, 10), (1234567890123, 10), (u64::MAX, 10), (255, 16), (4096, 16)] {
            push_number(&mut numbers, n, base);
            numbers.push(b' ');
        }
        assert_eq!(numbers, b"0 7 1234567890123 18446744073709551615 ff 1000 ");

        let mut encoded = Vec::new();
        encode_chunk(&mut encoded, b"hello world");
        encode_chunk(&mut encoded, b"");
        encoded.extend_from_slice(LAST_CHUNK);
        assert_eq!(encoded, b"b\r\nhello world\r\n0\r\n\r\n");
    }
}
