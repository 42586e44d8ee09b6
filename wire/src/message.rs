//! [`Message`]: an owned, typed description of one frame. The hot path uses
//! [`crate::Encoder`] and [`crate::Frame`] directly; tests, fuzz targets and
//! tools use `Message` to build frames and compare what was decoded.

use bytes::BytesMut;

use crate::body::{ErrorCode, ResumeEntry, Role};
use crate::decode::FrameView;
use crate::encode::{Encoder, Hello};
use crate::error::EncodeError;
use crate::header::{flags, Kind};

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message {
    Hello {
        epoch: u32,
        hello: Hello,
    },
    Resume {
        epoch: u32,
        /// (channel, delivered)
        entries: Vec<(u32, u64)>,
    },
    /// DATA carries epoch 0 (`wire/PROTOCOL.md`).
    Data {
        channel: u32,
        seq: u64,
        trace_id: u64,
        resend: bool,
        payload: Vec<u8>,
    },
    Ack {
        channel: u32,
        epoch: u32,
        seq: u64,
    },
    /// `ranges` empty: every seq from `seq` on; else the (first, last)
    /// seqs missed, the first starting at `seq`.
    Nack {
        channel: u32,
        epoch: u32,
        seq: u64,
        ranges: Vec<(u64, u64)>,
    },
    Heartbeat {
        channel: u32,
        epoch: u32,
        seq: u64,
    },
    Error {
        epoch: u32,
        code: ErrorCode,
        text: String,
    },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Resume { .. } => Kind::Resume,
            Message::Data { .. } => Kind::Data,
            Message::Ack { .. } => Kind::Ack,
            Message::Nack { .. } => Kind::Nack,
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Error { .. } => Kind::Error,
        }
    }

    /// Appends this message as one frame.
    pub fn encode(&self, enc: &Encoder, buf: &mut BytesMut) -> Result<usize, EncodeError> {
        match self {
            Message::Hello { epoch, hello } => enc.hello(buf, *epoch, hello),
            Message::Resume { epoch, entries } => {
                let entries: Vec<ResumeEntry> = entries
                    .iter()
                    .map(|&(c, d)| ResumeEntry::new(c, d))
                    .collect();
                enc.resume(buf, *epoch, &entries)
            }
            Message::Data {
                channel,
                seq,
                trace_id,
                resend,
                payload,
            } => enc.data(buf, *channel, *seq, *trace_id, *resend, payload),
            Message::Ack {
                channel,
                epoch,
                seq,
            } => enc.ack(buf, *channel, *epoch, *seq),
            Message::Nack {
                channel,
                epoch,
                seq,
                ranges,
            } => enc.nack_ranges(buf, *channel, *epoch, *seq, ranges),
            Message::Heartbeat {
                channel,
                epoch,
                seq,
            } => enc.heartbeat(buf, *channel, *epoch, *seq),
            Message::Error { epoch, code, text } => enc.error(buf, *epoch, *code, text),
        }
    }

    /// The message a validated frame carries.
    pub fn from_view(v: &FrameView<'_>) -> Message {
        let h = v.header;
        let (channel, epoch, seq) = (h.channel(), h.epoch(), h.seq());
        match v.kind() {
            Kind::Hello => {
                let b = v.hello().copied().unwrap_or_else(|| {
                    unreachable!("parse validated the HELLO body");
                });
                Message::Hello {
                    epoch,
                    hello: Hello {
                        cluster_id: b.cluster_id.get(),
                        node_id: b.node_id.get(),
                        role: Role::from_u16(b.role.get()).unwrap_or(Role::Node),
                        version_min: b.version_min,
                        version_max: b.version_max,
                        challenge: b.challenge,
                        response: (h.flags() & flags::HELLO_RESPONSE != 0).then_some(b.response),
                    },
                }
            }
            Kind::Resume => Message::Resume {
                epoch,
                entries: v
                    .resume_entries()
                    .unwrap_or(&[])
                    .iter()
                    .map(|e| (e.channel.get(), e.delivered.get()))
                    .collect(),
            },
            Kind::Data => Message::Data {
                channel,
                seq,
                trace_id: h.trace_id(),
                resend: h.flags() & flags::RESEND != 0,
                payload: v.payload.to_vec(),
            },
            Kind::Ack => Message::Ack {
                channel,
                epoch,
                seq,
            },
            Kind::Nack => Message::Nack {
                channel,
                epoch,
                seq,
                ranges: v
                    .nack_ranges()
                    .unwrap_or(&[])
                    .iter()
                    .map(|r| (r.first.get(), r.last.get()))
                    .collect(),
            },
            Kind::Heartbeat => Message::Heartbeat {
                channel,
                epoch,
                seq,
            },
            Kind::Error => {
                let (code, text) = v.error().unwrap_or((ErrorCode::Internal, ""));
                Message::Error {
                    epoch,
                    code,
                    text: text.to_owned(),
                }
            }
        }
    }
}
