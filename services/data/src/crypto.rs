//! Secrets at rest: passwords and admin URLs are sealed with
//! XChaCha20-Poly1305 under a key from config before they reach the database.
//! A sealed value is `base64(nonce ‖ ciphertext)`; a fresh random nonce each time.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, OsRng},
};

/// Errors sealing or opening a secret.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the credentials key must be 32 bytes, base64-encoded (make one with `openssl rand -base64 32`)")]
    BadKey,
    #[error("a stored secret cannot be decrypted: wrong credentials key, or the value was altered")]
    Open,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// A sealer for a base64-encoded 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| CryptoError::BadKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher })
    }

    /// A new random key, base64-encoded.
    pub fn generate_key() -> String {
        STANDARD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn seal(&self, plaintext: &str) -> Result<String, CryptoError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self.cipher.encrypt(&nonce, plaintext.as_bytes()).map_err(|_| CryptoError::Open)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(STANDARD.encode(sealed))
    }

    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError::Open)?;
        if bytes.len() < 24 {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| CryptoError::Open)?;
        let plaintext = self.cipher.decrypt(&XNonce::from(nonce), ciphertext).map_err(|_| CryptoError::Open)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Open)
    }
}

/// A strong random password (32 bytes, URL-safe base64 without padding).
pub fn password() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() -> Result<(), CryptoError> {
        let sealer = Sealer::from_base64(&Sealer::generate_key())?;
        let sealed = sealer.seal("s3cret")?;
        assert!(!sealed.contains("s3cret"));
        assert_ne!(sealed, sealer.seal("s3cret")?, "fresh nonce each time");
        assert_eq!(sealer.open(&sealed)?, "s3cret");
        let other = Sealer::from_base64(&Sealer::generate_key())?;
        assert!(other.open(&sealed).is_err());
        assert!(Sealer::from_base64("short").is_err());
        Ok(())
    }

    #[test]
    fn passwords_are_long_and_fresh() {
        let (a, b) = (password(), password());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
