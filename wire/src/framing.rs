//! Outgoing framing: turns one serialized message into whole packets (data packets, only the
//! last one NUL-padded, then one all-zero end-of-message packet), and recognises whole
//! packets on the way in. Never merges or splits packets differently: the caller hands each
//! `packet_size` chunk to a [`crate::aligned::PacketWrite`].

/// Cancel control packet byte (`packet_size` times `c`).
pub const CANCEL_BYTE: u8 = b'c';
/// Quit control packet byte (`packet_size` times `x`).
pub const QUIT_BYTE: u8 = b'x';

/// Frames `payload` for the wire. The result is a whole number of packets; chunk it by
/// `packet_size` to write packet by packet. `packet_size` must be non-zero (config validates).
pub fn frame_message(payload: &[u8], packet_size: usize) -> Vec<u8> {
    let packet_size = packet_size.max(1);
    let data_packets = payload.len().div_ceil(packet_size);
    let mut out = Vec::with_capacity((data_packets + 1) * packet_size);
    out.extend_from_slice(payload);
    // Pad only the last data packet; an exact multiple gets no padding.
    out.resize(data_packets * packet_size, 0);
    // End of message: a full packet of zeros.
    out.resize((data_packets + 1) * packet_size, 0);
    out
}

/// A control packet (cancel or quit) as a client sends it.
pub fn control_packet(byte: u8, packet_size: usize) -> Vec<u8> {
    vec![byte; packet_size]
}

/// Whether a whole packet is an end-of-message packet (all zeros).
pub fn is_end_of_message(packet: &[u8]) -> bool {
    packet.iter().all(|b| *b == 0)
}

/// Whether a whole packet is the control packet made of `byte` (cancel or quit).
pub fn is_control(packet: &[u8], byte: u8) -> bool {
    !packet.is_empty() && packet.iter().all(|b| *b == byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payload_is_padded_then_eom() {
        let out = frame_message(b"{\"a\": 1}", 16);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..8], b"{\"a\": 1}");
        assert!(out[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn exact_multiple_gets_no_padding_packet() {
        let payload = vec![b'a'; 32];
        let out = frame_message(&payload, 16);
        // Two full data packets and the EOM, nothing else.
        assert_eq!(out.len(), 48);
        assert!(out[..32].iter().all(|b| *b == b'a'));
        assert!(out[32..].iter().all(|b| *b == 0));
    }

    #[test]
    fn multi_packet_pads_only_last() {
        let payload = vec![b'b'; 20];
        let out = frame_message(&payload, 8);
        assert_eq!(out.len(), 32);
        assert!(out[..20].iter().all(|b| *b == b'b'));
        assert!(out[20..24].iter().all(|b| *b == 0));
        assert!(out[24..].iter().all(|b| *b == 0));
    }

    #[test]
    fn control_packets_are_full_size() {
        assert_eq!(control_packet(CANCEL_BYTE, 1024), vec![b'c'; 1024]);
        assert_eq!(control_packet(QUIT_BYTE, 4), b"xxxx".to_vec());
    }
}
