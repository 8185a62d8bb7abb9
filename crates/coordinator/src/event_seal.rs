//! What keeps build events on Redis private to the farm: anyone who can
//! reach Redis can subscribe to any channel (`PSUBSCRIBE *`) and publish
//! on it, so a channel name and a message must carry their own protection.
//!
//! From one farm secret (the Raft cluster secret, shared by every node;
//! a single node draws a random one at start) two keys are derived:
//! - the channel key names a build's channel `<prefix>events:<hex>` with a
//!   keyed BLAKE3 hash of the build id, so a build id (which clients see
//!   and logs print) does not tell where its events go;
//! - the event key seals each event with AES-256-GCM (a random 96-bit
//!   nonce per message, the channel name as associated data): a watcher
//!   opens only what a coordinator of the farm sealed for that build, and
//!   ignores messages published by hand or copied from another channel;
//!   a reader of Redis sees ciphertext. What remains visible is the
//!   traffic pattern (message sizes and times) and a replay of an earlier
//!   sealed event of the same build onto its own channel.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The two keys of one farm secret.
pub struct EventKeys {
    channel: [u8; 32],
    seal: LessSafeKey,
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventKeys(<redacted>)")
    }
}

impl EventKeys {
    /// Derives the keys from `secret` (any length; it is hashed).
    pub fn derive(secret: &[u8]) -> Self {
        let channel = blake3::derive_key("rbk 2026 redis build event channel names", secret);
        let seal = blake3::derive_key("rbk 2026 redis build event sealing", secret);
        let seal = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal).expect("a 32-byte key is an AES-256 key"));
        Self { channel, seal }
    }

    /// Keys from a fresh random secret (a coordinator with no peers).
    pub fn random() -> Self {
        Self::derive(&rand::random::<[u8; 32]>())
    }

    /// The channel `build_id`'s events go to.
    pub fn channel(&self, prefix: &str, build_id: &str) -> String {
        let mac = blake3::keyed_hash(&self.channel, build_id.as_bytes());
        format!("{prefix}events:{}", &mac.to_hex()[..32])
    }

    /// `nonce || ciphertext || tag` of `event`, bound to `channel`.
    pub fn seal(&self, channel: &str, event: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = event.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(channel.as_bytes()), &mut sealed)
            .expect("sealing an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The event in `message` if this farm sealed it for `channel`.
    pub fn open(&self, channel: &str, message: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = message.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self.seal.open_in_place(nonce, Aad::from(channel.as_bytes()), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_name_does_not_show_the_build_id_and_depends_on_the_secret() {
        let a = EventKeys::derive(b"farm-a-secret-0000000000");
        let ch = a.channel("rbk:", "b-1234");
        assert!(ch.starts_with("rbk:events:") && !ch.contains("b-1234"), "{ch}");
        assert_eq!(ch, EventKeys::derive(b"farm-a-secret-0000000000").channel("rbk:", "b-1234"), "every node names it alike");
        assert_ne!(ch, EventKeys::derive(b"farm-b-secret-0000000000").channel("rbk:", "b-1234"));
    }

    #[test]
    fn only_what_the_farm_sealed_for_that_channel_opens() {
        let k = EventKeys::derive(b"farm-secret-000000000000");
        let sealed = k.seal("c1", b"event");
        assert_eq!(k.open("c1", &sealed).as_deref(), Some(&b"event"[..]));
        assert!(!sealed.windows(5).any(|w| w == b"event"), "the event travels encrypted");
        assert_eq!(k.open("c2", &sealed), None, "copied onto another build's channel");
        assert_eq!(k.open("c1", b"event"), None, "published by hand");
        assert_eq!(EventKeys::derive(b"other-secret-00000000000").open("c1", &sealed), None);
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(k.open("c1", &flipped), None);
    }
}
