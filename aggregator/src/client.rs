//! A minimal HTTP/1.1 client over a plain TCP socket, for the `aggregator` commands and the
//! tests (no HTTP client dependency, and nothing to install on an operator's machine).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// GETs `path` from `addr`; returns the status code and the body as text.
pub fn get(addr: impl ToSocketAddrs, path: &str) -> std::io::Result<(u16, String)> {
    let (status, _, body) = get_bytes(addr, path)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// GETs `path` from `addr`; returns the status code, the header block and the body.
pub fn get_bytes(addr: impl ToSocketAddrs, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    request(addr, &format!("GET {path} HTTP/1.1\r\n"), b"")
}

/// POSTs a JSON body to `path`; returns the status code and the body as text.
pub fn post_json(
    addr: impl ToSocketAddrs,
    path: &str,
    body: &serde_json::Value,
) -> std::io::Result<(u16, String)> {
    send_json(addr, "POST", path, body.to_string().as_bytes())
}

/// PUTs a JSON body (already encoded) to `path`; returns the status code and the body.
pub fn put_json(
    addr: impl ToSocketAddrs,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    send_json(addr, "PUT", path, body)
}

fn send_json(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    let (status, _, out) = request(addr, &head, body)?;
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

/// Sends `method path` with `headers` (a Content-Length is added for the body); returns the
/// status code, the header block and the body.
pub fn request_with(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    request(addr, &head, body)
}

/// The bearer token every request of this process sends, once [`login`] succeeded.
static TOKEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Logs in to the aggregator at `addr`; later requests of this process carry the token.
pub fn login(addr: impl ToSocketAddrs, user: &str, password: &str) -> std::io::Result<()> {
    let body = serde_json::json!({"user": user, "password": password});
    let (status, text) = post_json(addr, "/api/v1/login", &body)?;
    if status != 200 {
        return Err(std::io::Error::other(format!(
            "login as '{user}' failed ({status}): {text}"
        )));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
    *TOKEN.lock().expect("not poisoned") = v["token"].as_str().map(str::to_string);
    Ok(())
}

fn request(
    addr: impl ToSocketAddrs,
    head_start: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut head_start = head_start.to_string();
    if let Some(t) = TOKEN.lock().expect("not poisoned").as_ref() {
        if !head_start
            .to_ascii_lowercase()
            .contains("\r\nauthorization:")
        {
            head_start.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
    }
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "{head_start}Host: {addr}\r\nConnection: close\r\n\r\n")?;
    s.write_all(body)?;
    // Read until the body is complete: servers that keep the connection open despite
    // `Connection: close` (chromedriver) end the body by its length or last chunk.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if response_complete(&raw) {
            break;
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        head,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    ))
}

/// Whether `raw` holds a whole response: its header and, by Content-Length or the last
/// chunk, its body.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let n = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
