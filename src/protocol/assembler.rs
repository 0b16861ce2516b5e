//! Incoming message assembly: turns an arbitrary byte stream (TCP may split or merge the
//! client's writes) into packets, then into whole messages and control packets. Enforces the
//! message size cap while reading, so an oversized message is refused without buffering it.
//! Never panics on any input (proptest below).

use crate::protocol::codec;

/// What a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one message with NULs trimmed from every packet's ends.
    Message(Vec<u8>),
    /// A packet of `c` bytes: cancel this session's jobs.
    Cancel,
    /// A packet of `x` bytes: quit request.
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// Reassembles packets. Control packets are recognized only between messages: inside a
/// message a packet of `c` bytes is just text (a prompt can contain "cccc...").
#[derive(Debug)]
pub struct Assembler {
    packet_size: usize,
    max_message: usize,
    packet: Vec<u8>,
    message: Vec<u8>,
    failed: bool,
}

impl Assembler {
    pub fn new(packet_size: usize, max_message: usize) -> Self {
        let packet_size = packet_size.max(1);
        Assembler {
            packet_size,
            max_message,
            packet: Vec::with_capacity(packet_size),
            message: Vec::new(),
            failed: false,
        }
    }

    /// Changes the size cap from the next byte on (raised once a session is authorized).
    pub(crate) fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// True when no partial packet or message is held (the client is between messages).
    pub(crate) fn is_idle(&self) -> bool {
        self.packet.is_empty() && self.message.is_empty()
    }

    /// Feeds received bytes; complete frames are appended to `out`. After an error the
    /// assembler refuses everything (the connection is to be closed).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) -> Result<(), AssembleError> {
        if self.failed {
            return Err(AssembleError::TooLarge {
                limit: self.max_message,
            });
        }
        while !data.is_empty() {
            let want = self.packet_size - self.packet.len();
            let take = want.min(data.len());
            let (head, rest) = data.split_at(take);
            data = rest;
            if self.packet.is_empty() && take == self.packet_size {
                // Whole packet in the input: no copy into the packet buffer.
                self.on_packet_slice(head, out)?;
            } else {
                self.packet.extend_from_slice(head);
                if self.packet.len() == self.packet_size {
                    let packet = std::mem::take(&mut self.packet);
                    let res = self.on_packet_slice(&packet, out);
                    self.packet = packet;
                    self.packet.clear();
                    res?;
                }
            }
        }
        Ok(())
    }

    fn on_packet_slice(
        &mut self,
        packet: &[u8],
        out: &mut Vec<Frame>,
    ) -> Result<(), AssembleError> {
        if codec::is_end_of_message(packet) {
            // End of message. An EOM with nothing before it carries no request: ignore it.
            if !self.message.is_empty() {
                out.push(Frame::Message(std::mem::take(&mut self.message)));
            }
            return Ok(());
        }
        if self.message.is_empty() {
            if codec::is_control(packet, codec::CANCEL_BYTE) {
                out.push(Frame::Cancel);
                return Ok(());
            }
            if codec::is_control(packet, codec::QUIT_BYTE) {
                out.push(Frame::Quit);
                return Ok(());
            }
        }
        let start = packet.iter().position(|b| *b != 0).unwrap_or(packet.len());
        let end = packet
            .iter()
            .rposition(|b| *b != 0)
            .map_or(start, |i| i + 1);
        let trimmed = packet.get(start..end).unwrap_or(&[]);
        if self.message.len() + trimmed.len() > self.max_message {
            self.failed = true;
            self.message = Vec::new();
            return Err(AssembleError::TooLarge {
                limit: self.max_message,
            });
        }
        self.message.extend_from_slice(trimmed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{control_packet, frame_message, CANCEL_BYTE, QUIT_BYTE};
    use proptest::prelude::*;

    fn feed_all(asm: &mut Assembler, data: &[u8], chunk: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        for part in data.chunks(chunk.max(1)) {
            asm.push(part, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_with_split_reads() {
        let payload = br#"{"action": "txt2img", "options": {"txt2img_prompt": "a cat"}}"#;
        let wire = frame_message(payload, 16);
        for chunk in [1, 3, 7, 16, 17, 100] {
            let mut asm = Assembler::new(16, 1 << 20);
            let frames = feed_all(&mut asm, &wire, chunk);
            assert_eq!(
                frames,
                vec![Frame::Message(payload.to_vec())],
                "chunk {chunk}"
            );
            assert!(asm.is_idle());
        }
    }

    #[test]
    fn exact_multiple_payload() {
        let payload = vec![b'q'; 64];
        let wire = frame_message(&payload, 16);
        let mut asm = Assembler::new(16, 1 << 20);
        assert_eq!(feed_all(&mut asm, &wire, 5), vec![Frame::Message(payload)]);
    }

    #[test]
    fn merged_messages_in_one_read() {
        let mut wire = frame_message(b"one", 8);
        wire.extend(control_packet(CANCEL_BYTE, 8));
        wire.extend(frame_message(b"two", 8));
        wire.extend(control_packet(QUIT_BYTE, 8));
        let mut asm = Assembler::new(8, 100);
        let frames = feed_all(&mut asm, &wire, wire.len());
        assert_eq!(
            frames,
            vec![
                Frame::Message(b"one".to_vec()),
                Frame::Cancel,
                Frame::Message(b"two".to_vec()),
                Frame::Quit
            ]
        );
    }

    #[test]
    fn control_bytes_inside_a_message_are_text() {
        let mut payload = b"{\"p\": \"".to_vec();
        payload.extend(vec![b'c'; 24]);
        payload.extend(b"\"}");
        // Packet 2 (bytes 8..16) is all 'c' but belongs to the message.
        let wire = frame_message(&payload, 8);
        let mut asm = Assembler::new(8, 1000);
        assert_eq!(feed_all(&mut asm, &wire, 8), vec![Frame::Message(payload)]);
    }

    #[test]
    fn nuls_trimmed_on_both_ends_of_each_packet() {
        let mut wire = Vec::new();
        wire.extend(b"\0\0ab\0\0\0\0");
        wire.extend(b"cd\0\0\0\0\0\0");
        wire.extend([0u8; 8]);
        let mut asm = Assembler::new(8, 100);
        assert_eq!(
            feed_all(&mut asm, &wire, 3),
            vec![Frame::Message(b"abcd".to_vec())]
        );
    }

    #[test]
    fn empty_eom_is_ignored() {
        let mut asm = Assembler::new(4, 100);
        assert!(feed_all(&mut asm, &[0u8; 12], 4).is_empty());
    }

    #[test]
    fn size_cap_fails_before_the_rest_arrives() {
        let mut asm = Assembler::new(8, 20);
        let mut out = Vec::new();
        asm.push(&[b'a'; 16], &mut out).unwrap();
        let err = asm.push(&[b'a'; 8], &mut out).unwrap_err();
        assert_eq!(err, AssembleError::TooLarge { limit: 20 });
        // Refuses further input rather than buffering it.
        assert!(asm.push(&[0u8; 8], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn message_exactly_at_cap_is_accepted() {
        let mut asm = Assembler::new(8, 16);
        let frames = feed_all(&mut asm, &frame_message(&[b'z'; 16], 8), 8);
        assert_eq!(frames, vec![Frame::Message(vec![b'z'; 16])]);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096),
                        size in 1usize..64, cap in 0usize..2048, chunk in 1usize..300) {
            let mut asm = Assembler::new(size, cap);
            let mut out = Vec::new();
            for part in data.chunks(chunk) {
                if asm.push(part, &mut out).is_err() { break; }
            }
        }

        #[test]
        fn framing_round_trips(payload in proptest::collection::vec(1u8..=255, 1..3000),
                               size in 1usize..64, chunk in 1usize..200) {
            // A payload that starts with a control packet's bytes would be read as control.
            let first = payload.iter().take(size).all(|b| *b == b'c' || *b == b'x');
            prop_assume!(!first || payload.len() < size);
            let wire = frame_message(&payload, size);
            let mut asm = Assembler::new(size, payload.len());
            let mut out = Vec::new();
            for part in wire.chunks(chunk) {
                asm.push(part, &mut out).unwrap();
            }
            prop_assert_eq!(out, vec![Frame::Message(payload)]);
        }
    }
}
