//! The resource tree: what a device serves, and the request and reply types its handlers see.
//!
//! A [`ResourceTree`] is built once and shared (for example in an `Arc`) by every device that
//! runs the same firmware, so a simulator with a million devices keeps one tree. Handlers are
//! plain `fn` pointers that get the device's own state `S` by `&mut`, so the tree holds no
//! per-device data.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::link::{self, Link};
use crate::time::Instant;
use core::net::SocketAddr;

pub use coap_lite::RequestType as Method;
pub use coap_lite::ResponseType as Code;

/// CoAP Content-Format numbers this crate names (IANA registry, RFC 7252 §12.3, RFC 8428 §12.3).
pub mod content_format {
    /// `text/plain; charset=utf-8`
    pub const TEXT_PLAIN: u16 = 0;
    /// `application/link-format` (RFC 6690)
    pub const LINK_FORMAT: u16 = 40;
    /// `application/octet-stream`
    pub const OCTET_STREAM: u16 = 42;
    /// `application/json`
    pub const JSON: u16 = 50;
    /// `application/cbor`
    pub const CBOR: u16 = 60;
    /// `application/senml+json` (RFC 8428)
    pub const SENML_JSON: u16 = 110;
    /// `application/senml+cbor` (RFC 8428)
    pub const SENML_CBOR: u16 = 112;
}

/// A request handler: the device's state and the request in, the reply out.
pub type Handler<S> = fn(&mut S, &Request<'_>) -> Reply;

/// Identifies a request whose answer the handler deferred with [`Reply::Separate`]; pass it to
/// `Endpoint::respond_separately` when the answer is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub(crate) u32);

/// Index of a resource in its [`ResourceTree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(pub(crate) u8);

impl ResourceId {
    /// The index as a number (0 for the first resource added).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of resources, for saying which ones changed (at most 64 resources per tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed(u64);

impl Changed {
    /// No resource changed.
    pub const NONE: Changed = Changed(0);

    /// Adds a resource to the set.
    pub fn with(self, id: ResourceId) -> Changed {
        Changed(self.0 | (1u64 << id.0.min(63)))
    }

    /// True when nothing is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The resources in the set, lowest index first.
    pub fn iter(self) -> impl Iterator<Item = ResourceId> {
        (0u8..64)
            .filter(move |i| self.0 & (1u64 << i) != 0)
            .map(ResourceId)
    }
}

/// What a handler sees of a request. The payload is the whole body, even when it came in
/// Block1 pieces.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The resource path without a leading slash, e.g. `sensors/temperature`.
    pub path: &'a str,
    /// Uri-Query options, each `key=value` or `key`.
    pub query: &'a [String],
    /// Content-Format of the payload, if the request named one.
    pub content_format: Option<u16>,
    /// The content format the response must use: the request's Accept if it had one, else the
    /// resource's first format. Always one the resource declared.
    pub accept: Option<u16>,
    /// The request body.
    pub payload: &'a [u8],
    /// Who sent it.
    pub peer: SocketAddr,
    /// When it arrived (or, for a notification, when the resource changed).
    pub now: Instant,
    /// Handle for a deferred (separate) answer.
    pub ticket: Ticket,
}

impl Request<'_> {
    /// The payload as UTF-8 text, trimmed, if it is text.
    pub fn text(&self) -> Option<&str> {
        core::str::from_utf8(self.payload).ok().map(str::trim)
    }

    /// The value of query parameter `key` (`key=value`), if present.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find_map(|q| q.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A response a handler gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Response code.
    pub code: Code,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Body; the core splits it into Block2 pieces when it does not fit one block.
    pub payload: Vec<u8>,
    /// Max-Age option in seconds, when not the default 60.
    pub max_age: Option<u32>,
    /// Location-Path segments (for 2.01 Created).
    pub location: Vec<String>,
}

impl Response {
    /// A response with a code and nothing else.
    pub fn code(code: Code) -> Response {
        Response {
            code,
            content_format: None,
            payload: Vec::new(),
            max_age: None,
            location: Vec::new(),
        }
    }

    /// 2.05 Content with a body in the given content format.
    pub fn content(content_format: u16, payload: Vec<u8>) -> Response {
        Response {
            content_format: Some(content_format),
            payload,
            ..Response::code(Code::Content)
        }
    }

    /// An error code with a diagnostic payload (RFC 7252 §5.5.2: text for humans).
    pub fn error(code: Code, diagnostic: impl Into<String>) -> Response {
        Response {
            payload: diagnostic.into().into_bytes(),
            ..Response::code(code)
        }
    }

    /// Sets Max-Age.
    pub fn with_max_age(mut self, seconds: u32) -> Response {
        self.max_age = Some(seconds);
        self
    }

    /// True for 2.xx codes.
    pub fn is_success(&self) -> bool {
        !self.code.is_error() && !matches!(self.code, Code::UnKnown)
    }
}

/// What a handler returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer now (piggybacked on the ACK of a Confirmable request).
    Now(Response),
    /// Answer later through `Endpoint::respond_separately` with the request's [`Ticket`]; the
    /// core acknowledges a Confirmable request at once (RFC 7252 §5.2.2).
    Separate,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Now(r)
    }
}

/// Link-format attributes of a resource (RFC 6690 §3, RFC 7641 §6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkAttrs {
    /// Resource type `rt`.
    pub rt: Option<&'static str>,
    /// Interface description `if`.
    pub interface: Option<&'static str>,
    /// Human-readable title.
    pub title: Option<&'static str>,
    /// Content formats served by GET, preferred first (`ct`); empty means any/none declared.
    pub ct: Vec<u16>,
    /// Observable (`obs`).
    pub observable: bool,
}

/// One resource: a path, its link attributes, and handlers per method.
pub struct Resource<S> {
    path: String,
    attrs: LinkAttrs,
    accepts: Vec<u16>,
    get: Option<Handler<S>>,
    put: Option<Handler<S>>,
    post: Option<Handler<S>>,
    delete: Option<Handler<S>>,
}

impl<S> core::fmt::Debug for Resource<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Resource")
            .field("path", &self.path)
            .field("attrs", &self.attrs)
            .finish_non_exhaustive()
    }
}

impl<S> Resource<S> {
    /// A resource at `path` (leading `/` optional) with no handlers yet.
    pub fn new(path: &str) -> Resource<S> {
        Resource {
            path: path.trim_start_matches('/').to_owned(),
            attrs: LinkAttrs::default(),
            accepts: Vec::new(),
            get: None,
            put: None,
            post: None,
            delete: None,
        }
    }

    /// Sets the link attributes.
    pub fn attrs(mut self, attrs: LinkAttrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// Sets `rt`.
    pub fn rt(mut self, rt: &'static str) -> Self {
        self.attrs.rt = Some(rt);
        self
    }

    /// Sets `if`.
    pub fn interface(mut self, interface: &'static str) -> Self {
        self.attrs.interface = Some(interface);
        self
    }

    /// Sets `title`.
    pub fn title(mut self, title: &'static str) -> Self {
        self.attrs.title = Some(title);
        self
    }

    /// Content formats GET can produce, preferred first.
    pub fn content_formats(mut self, ct: &[u16]) -> Self {
        self.attrs.ct = ct.to_vec();
        self
    }

    /// Marks the resource observable (RFC 7641).
    pub fn observable(mut self) -> Self {
        self.attrs.observable = true;
        self
    }

    /// Content formats PUT and POST accept, the first being assumed when a request names none.
    /// Left empty, any format is passed to the handler.
    pub fn accepts(mut self, ct: &[u16]) -> Self {
        self.accepts = ct.to_vec();
        self
    }

    /// Handles GET (also used to render Observe notifications).
    pub fn get(mut self, h: Handler<S>) -> Self {
        self.get = Some(h);
        self
    }

    /// Handles PUT.
    pub fn put(mut self, h: Handler<S>) -> Self {
        self.put = Some(h);
        self
    }

    /// Handles POST.
    pub fn post(mut self, h: Handler<S>) -> Self {
        self.post = Some(h);
        self
    }

    /// Handles DELETE.
    pub fn delete(mut self, h: Handler<S>) -> Self {
        self.delete = Some(h);
        self
    }

    /// The path, without a leading slash.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The link attributes.
    pub fn link_attrs(&self) -> &LinkAttrs {
        &self.attrs
    }

    /// Formats PUT/POST accept.
    pub fn accepted_formats(&self) -> &[u16] {
        &self.accepts
    }

    /// The handler for `method`, if any.
    pub fn handler(&self, method: Method) -> Option<Handler<S>> {
        match method {
            Method::Get => self.get,
            Method::Put => self.put,
            Method::Post => self.post,
            Method::Delete => self.delete,
            _ => None,
        }
    }

    /// The `Allow`-style list of methods, for diagnostics.
    pub fn methods(&self) -> String {
        let names = [
            ("GET", self.get.is_some()),
            ("PUT", self.put.is_some()),
            ("POST", self.post.is_some()),
            ("DELETE", self.delete.is_some()),
        ];
        names
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a resource could not be added to a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// Two resources with one path.
    #[error("resource path `{0}` is already in the tree")]
    DuplicatePath(String),
    /// More resources than a [`Changed`] set can name.
    #[error("a tree holds at most 64 resources")]
    Full,
    /// `.well-known/core` is served by the core itself.
    #[error("`.well-known/core` is built in")]
    Reserved,
}

/// The resources of a device, shared by every device of the same kind.
pub struct ResourceTree<S> {
    resources: Vec<Resource<S>>,
}

impl<S> core::fmt::Debug for ResourceTree<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.resources.iter()).finish()
    }
}

impl<S> Default for ResourceTree<S> {
    fn default() -> Self {
        ResourceTree {
            resources: Vec::new(),
        }
    }
}

/// The path of the built-in discovery resource (RFC 6690 §4).
pub const WELL_KNOWN_CORE: &str = ".well-known/core";

impl<S> ResourceTree<S> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource and returns its id.
    pub fn add(&mut self, resource: Resource<S>) -> Result<ResourceId, TreeError> {
        if resource.path == WELL_KNOWN_CORE {
            return Err(TreeError::Reserved);
        }
        if self.resources.iter().any(|r| r.path == resource.path) {
            return Err(TreeError::DuplicatePath(resource.path));
        }
        let id = u8::try_from(self.resources.len())
            .ok()
            .filter(|i| *i < 64)
            .ok_or(TreeError::Full)?;
        self.resources.push(resource);
        Ok(ResourceId(id))
    }

    /// The resource with `id`.
    pub fn get(&self, id: ResourceId) -> Option<&Resource<S>> {
        self.resources.get(id.index())
    }

    /// Finds a resource by path (leading `/` optional).
    pub fn find(&self, path: &str) -> Option<ResourceId> {
        let path = path.trim_start_matches('/');
        self.resources
            .iter()
            .position(|r| r.path == path)
            .and_then(|i| u8::try_from(i).ok())
            .map(ResourceId)
    }

    /// All resources with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (ResourceId, &Resource<S>)> {
        self.resources
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((ResourceId(u8::try_from(i).ok()?), r)))
    }

    /// Renders `/.well-known/core` in link format (RFC 6690 §5), keeping only the resources that
    /// match every query filter (§4.1: `attr=value`, with a trailing `*` as a prefix match).
    pub fn link_format(&self, query: &[String]) -> String {
        let mut out = String::new();
        for (_, r) in self.iter() {
            if !query.iter().all(|q| matches_filter(r, q)) {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            link::write_link(&mut out, &r.link());
        }
        out
    }
}

impl<S> Resource<S> {
    /// This resource as a link of `/.well-known/core`: `rt`, `if`, `ct` (one number bare,
    /// several quoted and space-separated), `title`, `obs`.
    fn link(&self) -> Link {
        let mut l = Link::new(format!("/{}", self.path));
        if let Some(rt) = self.attrs.rt {
            l = l.attr("rt", Some(rt));
        }
        if let Some(i) = self.attrs.interface {
            l = l.attr("if", Some(i));
        }
        if !self.attrs.ct.is_empty() {
            let list: Vec<String> = self.attrs.ct.iter().map(u16::to_string).collect();
            l = l.attr("ct", Some(&list.join(" ")));
        }
        if let Some(t) = self.attrs.title {
            l = l.attr("title", Some(t));
        }
        if self.attrs.observable {
            l = l.attr("obs", None);
        }
        l
    }
}

fn matches_filter<S>(r: &Resource<S>, query: &str) -> bool {
    let (key, want) = query.split_once('=').unwrap_or((query, ""));
    let (want, prefix) = match want.strip_suffix('*') {
        Some(p) => (p, true),
        None => (want, false),
    };
    let test = |have: &str| {
        if prefix {
            have.starts_with(want)
        } else {
            have == want
        }
    };
    let words = |v: Option<&str>| v.is_some_and(|v| v.split(' ').any(test));
    match key {
        "href" => test(&format!("/{}", r.path)),
        "rt" => words(r.attrs.rt),
        "if" => words(r.attrs.interface),
        "title" => r.attrs.title.is_some_and(test),
        "ct" => r.attrs.ct.iter().any(|c| test(&c.to_string())),
        "obs" => r.attrs.observable,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> ResourceTree<()> {
        let mut t = ResourceTree::new();
        t.add(
            Resource::new("/sensors/temp")
                .rt("temperature-c")
                .interface("sensor")
                .content_formats(&[112, 110])
                .observable()
                .get(|_, _| Response::content(0, b"1".to_vec()).into()),
        )
        .unwrap();
        t.add(
            Resource::new("valve")
                .rt("valve")
                .content_formats(&[0])
                .title("Main valve"),
        )
        .unwrap();
        t
    }

    #[test]
    fn link_format_follows_rfc6690() {
        assert_eq!(
            tree().link_format(&[]),
            "</sensors/temp>;rt=\"temperature-c\";if=\"sensor\";ct=\"112 110\";obs,</valve>;rt=\"valve\";ct=0;title=\"Main valve\""
        );
    }

    #[test]
    fn link_format_filters_by_query() {
        let t = tree();
        assert_eq!(
            t.link_format(&["rt=valve".into()]),
            "</valve>;rt=\"valve\";ct=0;title=\"Main valve\""
        );
        assert_eq!(t.link_format(&["rt=temp*".into()]).split(',').count(), 1);
        assert_eq!(t.link_format(&["ct=110".into()]).split(',').count(), 1);
        assert_eq!(
            t.link_format(&["href=/sensors*".into()]).split(',').count(),
            1
        );
        assert_eq!(t.link_format(&["rt=none".into()]), "");
    }

    #[test]
    fn tree_refuses_duplicates_and_reserved_paths() {
        let mut t = tree();
        assert_eq!(
            t.add(Resource::new("valve")),
            Err(TreeError::DuplicatePath("valve".into()))
        );
        assert_eq!(
            t.add(Resource::new("/.well-known/core")),
            Err(TreeError::Reserved)
        );
        assert_eq!(t.find("/valve").map(ResourceId::index), Some(1));
    }

    #[test]
    fn changed_set_iterates_members() {
        let set = Changed::NONE.with(ResourceId(3)).with(ResourceId(0));
        assert_eq!(
            set.iter().map(ResourceId::index).collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert!(Changed::NONE.is_empty());
    }
}
