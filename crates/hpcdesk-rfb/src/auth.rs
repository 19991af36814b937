//! VNC Authentication (RFB 3.8 §7.2.2) and TigerVNC password files.
//!
//! VNC uses single DES with the password as key, but its DES code reads key bits from the
//! least significant end. With a standard DES each key byte is therefore bit-reversed first.
//! Only the first [`PASSWORD_LEN`] bytes of a password count; shorter ones are zero-padded.

use des::Des;
use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

/// VNC Authentication uses at most this many password bytes.
pub const PASSWORD_LEN: usize = 8;

/// The fixed key with which VNC obfuscates stored passwords (`vncauth.c`).
const OBFUSCATION_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];

fn vnc_des(key_bytes: &[u8]) -> Des {
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(key_bytes.iter().take(PASSWORD_LEN)) {
        *k = b.reverse_bits();
    }
    Des::new_from_slice(&key).expect("DES takes 8-byte keys")
}

/// The 16-byte response to a VNC Authentication challenge.
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let des = vnc_des(password);
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        des.encrypt_block(block.try_into().expect("chunks of 8"));
    }
    out
}

/// The 8 bytes of a VNC password file (`vncpasswd -f` output) for `password`.
pub fn obfuscated_password_file(password: &[u8]) -> [u8; 8] {
    let mut block = [0u8; 8];
    for (d, s) in block.iter_mut().zip(password.iter().take(PASSWORD_LEN)) {
        *d = *s;
    }
    vnc_des(&OBFUSCATION_KEY).encrypt_block((&mut block).into());
    block
}

/// The password an 8-byte password-file entry holds (zero-padded to 8 bytes): what tools
/// that connect as a plain VNC viewer (the desktop benchmark) read from the agent's file.
pub fn password_from_file(entry: &[u8; 8]) -> [u8; 8] {
    let mut block = *entry;
    vnc_des(&OBFUSCATION_KEY).decrypt_block((&mut block).into());
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by TigerVNC 1.12 `vncpasswd -f`.
    #[test]
    fn password_file_matches_vncpasswd() {
        assert_eq!(
            obfuscated_password_file(b"secret12"),
            [0x24, 0xb5, 0xae, 0x4c, 0xe1, 0x55, 0x03, 0xc6]
        );
        assert_eq!(
            obfuscated_password_file(b"abc"),
            [0x9c, 0x0a, 0x17, 0x2d, 0x34, 0x82, 0xe1, 0x22]
        );
    }

    #[test]
    fn only_eight_password_bytes_count() {
        let ch = [7u8; 16];
        assert_eq!(
            vnc_auth_response(b"secret12", &ch),
            vnc_auth_response(b"secret12-and-more", &ch)
        );
        assert_ne!(
            vnc_auth_response(b"secret12", &ch),
            vnc_auth_response(b"secret13", &ch)
        );
    }

    /// The obfuscation is DES under the VNC key convention, so the auth response to a
    /// challenge equal to the padded password, keyed by the fixed key, is the file content.
    #[test]
    fn auth_response_and_password_file_use_the_same_des() {
        let mut ch = [0u8; 16];
        ch[..8].copy_from_slice(b"secret12");
        ch[8..].copy_from_slice(b"secret12");
        let r = vnc_auth_response(&OBFUSCATION_KEY, &ch);
        assert_eq!(&r[..8], &obfuscated_password_file(b"secret12"));
    }

    #[test]
    fn a_password_file_entry_reads_back_as_its_password() {
        let entry = obfuscated_password_file(b"s3cret");
        assert_eq!(&password_from_file(&entry), b"s3cret\0\0");
    }
}
