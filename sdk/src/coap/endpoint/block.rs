//! Block-wise transfers of an [`Endpoint`] (RFC 7959): Block1 uploads put back together
//! piece by piece (§2.5), bounded in number and size, and GET bodies cut into the requested
//! Block2 piece with the whole body's ETag and Size2 (§2.4).

use alloc::format;
use alloc::vec::Vec;

use core::net::SocketAddr;

use crate::time::Instant;

use super::Endpoint;
use super::request::Answer;
use crate::coap::resource::{Code, ResourceId};
use crate::coap::wire::{self, Block};

/// A Block1 upload being put together (RFC 7959 §2.5).
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) peer: SocketAddr,
    pub(super) resource: ResourceId,
    pub(super) body: Vec<u8>,
    pub(super) content_format: Option<u16>,
    pub(super) expires: Instant,
}

/// A reassembled Block1 body and its content format.
pub(super) type WholeBody = (Vec<u8>, Option<u16>);

impl Endpoint {
    /// Adds one Block1 piece; the whole body once the last piece is in.
    pub(super) fn upload(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        resource: ResourceId,
        b: Block,
        content_format: Option<u16>,
        piece: &[u8],
    ) -> Result<Option<WholeBody>, Answer> {
        if b.more && piece.len() != b.size() {
            return Err(Answer::error(
                Code::BadRequest,
                format!(
                    "Block1 #{} carries {} bytes, not {}",
                    b.num,
                    piece.len(),
                    b.size()
                ),
            ));
        }
        let expires = now + self.config.exchange_lifetime();
        let pos = self
            .uploads
            .iter()
            .position(|u| u.peer == peer && u.resource == resource);
        let pos = match (b.num, pos) {
            (0, Some(p)) => {
                if let Some(u) = self.uploads.get_mut(p) {
                    u.body.clear();
                    u.content_format = content_format;
                }
                p
            }
            (0, None) => {
                if self.uploads.len() >= usize::from(self.config.max_uploads.max(1)) {
                    self.uploads.remove(0);
                }
                self.uploads.push(Upload {
                    peer,
                    resource,
                    body: Vec::new(),
                    content_format,
                    expires,
                });
                self.uploads.len() - 1
            }
            (_, Some(p)) => p,
            (n, None) => {
                return Err(Answer::error(
                    Code::RequestEntityIncomplete,
                    format!("Block1 #{n} without the blocks before it"),
                ));
            }
        };
        let max_body = self.config.max_body;
        let Some(u) = self.uploads.get_mut(pos) else {
            return Err(Answer::error(
                Code::InternalServerError,
                "upload state lost",
            ));
        };
        if b.offset() != u.body.len() {
            let have = u.body.len();
            self.uploads.remove(pos);
            return Err(Answer::error(
                Code::RequestEntityIncomplete,
                format!(
                    "Block1 #{} starts at byte {}, expected {have}",
                    b.num,
                    b.offset()
                ),
            ));
        }
        if u.body.len() + piece.len() > max_body {
            self.uploads.remove(pos);
            let mut answer = Answer::error(
                Code::RequestEntityTooLarge,
                format!("bodies are limited to {max_body} bytes"),
            );
            answer.size1 = Some(max_body as u32);
            return Err(answer);
        }
        u.body.extend_from_slice(piece);
        u.expires = expires;
        if b.more {
            return Ok(None);
        }
        let u = self.uploads.remove(pos);
        Ok(Some((u.body, u.content_format)))
    }

    /// Cuts a GET body into the requested (or first) Block2 piece when it needs cutting.
    pub(super) fn finish_block2(&self, mut answer: Answer, requested: Option<Block>) -> Answer {
        let ours = self.config.block_szx.min(6);
        let len = answer.response.payload.len();
        let szx = requested.map_or(ours, |b| b.szx.min(ours));
        let size = 1usize << (u32::from(szx) + 4);
        if requested.is_none() && len <= size {
            return answer;
        }
        if !answer.response.is_success() {
            return answer;
        }
        // A larger requested block size maps onto ours at the same byte offset (RFC 7959 §2.4).
        let num = requested.map_or(0, |b| {
            if b.szx > szx {
                b.num << (b.szx - szx)
            } else {
                b.num
            }
        });
        let offset = (num as usize).saturating_mul(size);
        if offset > len || (offset == len && len > 0) {
            return Answer::error(
                Code::BadOption,
                format!("Block2 #{num} is past the end of a {len}-byte body"),
            );
        }
        let end = (offset + size).min(len);
        let etag = (wire::fnv1a(&answer.response.payload) as u32).to_be_bytes();
        answer.response.payload = answer
            .response
            .payload
            .get(offset..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        answer.block2 = Some(Block {
            num,
            more: end < len,
            szx,
        });
        answer.size2 = Some(len as u32);
        answer.etag = Some(etag);
        answer
    }
}
