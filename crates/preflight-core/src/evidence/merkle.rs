//! The RFC 6962 / RFC 9162 Merkle tree of the evidence log, its proofs, and checkpoints.

use ring::digest::{digest, Context, SHA256};
use serde::{Deserialize, Serialize};

use super::canonical;
use super::record::SignedRecord;

const CHECKPOINT_DOMAIN: &[u8] = b"preflight evidence checkpoint v1\n";

/// A SHA-256 hash (leaf, node or tree root).
pub type Hash32 = [u8; 32];

/// What the controller's key signs: the state of a log at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Which log this is, e.g. `preflight/batch/B-17` (distinguishes logs signed by one key).
    pub origin: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// Merkle tree hash of the leaves, lowercase hex.
    pub root_hash: String,
    /// UTC time of signing in milliseconds since the Unix epoch.
    pub time_utc_ms: u64,
    /// On a bundle's own checkpoint: SHA-256 of the CA certificate the bundle carries, which
    /// binds that CA to the controller's signature. Absent on global log checkpoints and in
    /// bundles exported before bundles carried the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

/// A checkpoint and the controller's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// ECDSA P-256 SHA-256 ASN.1 DER signature, lowercase hex.
    pub signature: String,
}

/// A Merkle proof was asked for sizes or indexes that do not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Index outside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Size larger than the log.
    #[error("tree size {size} is larger than the log ({len} leaves)")]
    SizeOutOfRange {
        /// Requested size.
        size: u64,
        /// Leaves in the log.
        len: u64,
    },
    /// Old size larger than new size.
    #[error("consistency from size {old} to {new}: old size must not exceed new size")]
    Order {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// The proof does not verify.
    #[error("the proof does not lead to the expected root hash")]
    Mismatch,
}

impl Checkpoint {
    /// The exact bytes the controller signs.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = CHECKPOINT_DOMAIN.to_vec();
        m.extend_from_slice(&canonical(self));
        m
    }
}

// ---------------------------------------------------------------------------------------------
// Merkle tree (RFC 6962 / RFC 9162 section 2.1)

/// RFC 6962 leaf hash: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut c = Context::new(&SHA256);
    c.update(&[0x00]);
    c.update(data);
    to_hash(c.finish().as_ref())
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut c = Context::new(&SHA256);
    c.update(&[0x01]);
    c.update(left);
    c.update(right);
    to_hash(c.finish().as_ref())
}

fn to_hash(d: &[u8]) -> Hash32 {
    let mut h = [0u8; 32];
    h.copy_from_slice(d);
    h
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Merkle tree hash of a list of leaf hashes (the empty tree hashes to SHA-256 of nothing).
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    match leaves.len() {
        0 => to_hash(digest(&SHA256, b"").as_ref()),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
        }
    }
}

/// Complete subtree hashes of a log: `levels[0]` are the leaves, `levels[k][i]` the hash of
/// the perfect subtree of `2^k` leaves starting at leaf `i * 2^k`. Any RFC 6962 subtree hash
/// then costs O(log n) instead of O(n).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Levels(Vec<Vec<Hash32>>);

impl Default for Levels {
    fn default() -> Self {
        Levels(vec![Vec::new()])
    }
}

impl Levels {
    fn from_leaves(leaves: Vec<Hash32>) -> Self {
        let mut l = Levels::default();
        for h in leaves {
            l.push(h);
        }
        l
    }

    fn leaves(&self) -> &[Hash32] {
        &self.0[0]
    }

    fn push(&mut self, leaf: Hash32) {
        self.0[0].push(leaf);
        let mut i = self.0[0].len() - 1;
        let mut k = 0;
        // A node with an odd index completes a pair: hash it with its left sibling upwards.
        while i % 2 == 1 {
            let parent = node_hash(&self.0[k][i - 1], &self.0[k][i]);
            if self.0.len() == k + 1 {
                self.0.push(Vec::new());
            }
            self.0[k + 1].push(parent);
            i /= 2;
            k += 1;
        }
    }

    /// RFC 6962 hash of the `len` leaves starting at `lo` (len >= 1, within the log).
    fn hash(&self, lo: usize, len: usize) -> Hash32 {
        if len.is_power_of_two() && lo.is_multiple_of(len) {
            let k = len.trailing_zeros() as usize;
            return self.0[k][lo / len];
        }
        let k = split(len);
        node_hash(&self.hash(lo, k), &self.hash(lo + k, len - k))
    }

    fn root(&self, size: usize) -> Hash32 {
        if size == 0 {
            to_hash(digest(&SHA256, b"").as_ref())
        } else {
            self.hash(0, size)
        }
    }

    fn inclusion_path(&self, m: usize, lo: usize, n: usize, out: &mut Vec<Hash32>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.inclusion_path(m, lo, k, out);
            out.push(self.hash(lo + k, n - k));
        } else {
            self.inclusion_path(m - k, lo + k, n - k, out);
            out.push(self.hash(lo, k));
        }
    }

    fn consistency_subproof(
        &self,
        m: usize,
        lo: usize,
        n: usize,
        complete: bool,
        out: &mut Vec<Hash32>,
    ) {
        if m == n {
            if !complete {
                out.push(self.hash(lo, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.consistency_subproof(m, lo, k, complete, out);
            out.push(self.hash(lo + k, n - k));
        } else {
            self.consistency_subproof(m - k, lo + k, n - k, false, out);
            out.push(self.hash(lo, k));
        }
    }
}

/// Verifies an RFC 9162 inclusion proof of `leaf` at `index` in a tree of `size` leaves.
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Verifies an RFC 9162 consistency proof between a tree of `old_size` leaves with root
/// `old_root` and a tree of `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Order {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Mismatch);
    }
    let mut path: Vec<Hash32> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr == *old_root && sr == *new_root && s == 0 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// In-memory model of the evidence log: an append-only list of leaf hashes forming an
/// RFC 6962 Merkle tree. The controller persists the leaves (and the signed records) itself.
///
/// Serialises as `{"leaves": [...]}`; the subtree cache is rebuilt on load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EvidenceLogRepr", into = "EvidenceLogRepr")]
pub struct EvidenceLog {
    levels: Levels,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceLogRepr {
    leaves: Vec<Hash32>,
}

impl From<EvidenceLogRepr> for EvidenceLog {
    fn from(r: EvidenceLogRepr) -> Self {
        EvidenceLog::from_leaves(r.leaves)
    }
}

impl From<EvidenceLog> for EvidenceLogRepr {
    fn from(l: EvidenceLog) -> Self {
        EvidenceLogRepr {
            leaves: l.levels.leaves().to_vec(),
        }
    }
}

impl EvidenceLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a log from persisted leaf hashes, in order.
    pub fn from_leaves(leaves: Vec<Hash32>) -> Self {
        Self {
            levels: Levels::from_leaves(leaves),
        }
    }

    /// The leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash32] {
        self.levels.leaves()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }

    /// Appends a signed record; returns its index and leaf hash.
    pub fn append(&mut self, record: &SignedRecord) -> (u64, Hash32) {
        let h = record.leaf_hash();
        self.levels.push(h);
        (self.len() - 1, h)
    }

    /// Root hash of the whole log.
    pub fn root(&self) -> Hash32 {
        self.levels.root(self.leaves().len())
    }

    /// Root hash of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash32, ProofError> {
        Ok(self.levels.root(self.prefix(size)?.len()))
    }

    fn prefix(&self, size: u64) -> Result<&[Hash32], ProofError> {
        if size > self.len() {
            return Err(ProofError::SizeOutOfRange {
                size,
                len: self.len(),
            });
        }
        // size <= len, which is a usize.
        Ok(&self.leaves()[..size as usize])
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash32>, ProofError> {
        let n = self.prefix(size)?.len();
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.levels.inclusion_path(index as usize, 0, n, &mut out);
        Ok(out)
    }

    /// Consistency proof between the trees of the first `old_size` and `new_size` leaves.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, ProofError> {
        if old_size > new_size {
            return Err(ProofError::Order {
                old: old_size,
                new: new_size,
            });
        }
        let n = self.prefix(new_size)?.len();
        let mut out = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.levels
                .consistency_subproof(old_size as usize, 0, n, true, &mut out);
        }
        Ok(out)
    }

    /// The current checkpoint, signed by `sign_fn` (which receives the exact message and
    /// returns the lowercase hex signature, e.g. a closure around [`sign_checkpoint`]).
    pub fn checkpoint<E>(
        &self,
        origin: &str,
        time_utc_ms: u64,
        sign_fn: impl FnOnce(&Checkpoint) -> Result<String, E>,
    ) -> Result<SignedCheckpoint, E> {
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            tree_size: self.len(),
            root_hash: hex::encode(self.root()),
            time_utc_ms,
            ca_sha256: None,
        };
        let signature = sign_fn(&checkpoint)?;
        Ok(SignedCheckpoint {
            checkpoint,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_and_single_roots_match_rfc6962() {
        assert_eq!(
            hex::encode(merkle_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn root_matches_certificate_transparency_test_vector() {
        // The eight leaves used by the certificate-transparency reference implementations.
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let l: Vec<Hash32> = inputs.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(
            hex::encode(merkle_root(&l)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    /// The eight leaves of the certificate-transparency / RFC 6962 reference test data.
    fn ct_leaves() -> Vec<Hash32> {
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        inputs.iter().map(|d| leaf_hash(d)).collect()
    }

    fn h(s: &str) -> Hash32 {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    /// Roots, inclusion proofs and consistency proofs of the reference data (the
    /// transparency-dev / certificate-transparency test vectors: inclusion of leaf 1 of 1,
    /// 1 of 8, 6 of 8, 3 of 3, 2 of 5 and consistency 1→1, 1→8, 6→8, 2→5, 6→7, with 1-based
    /// leaf numbers as there). Both sides: the proofs the log makes equal them, and they verify.
    #[test]
    fn rfc6962_reference_vectors() {
        const ROOTS: [&str; 8] = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let inclusion: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                3,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                2,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let consistency: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let leaves = ct_leaves();
        let log = EvidenceLog::from_leaves(leaves.clone());
        for (n, want) in ROOTS.iter().enumerate() {
            let size = n as u64 + 1;
            assert_eq!(
                hex::encode(log.root_at(size).expect("size")),
                *want,
                "root of {size}"
            );
            assert_eq!(
                hex::encode(merkle_root(&leaves[..=n])),
                *want,
                "root of {size}"
            );
        }
        for (leaf, size, want) in inclusion {
            let index = leaf - 1;
            let want: Vec<Hash32> = want.iter().map(|x| h(x)).collect();
            assert_eq!(
                log.inclusion_proof(index, *size).expect("proof"),
                want,
                "inclusion of leaf {leaf} in {size}"
            );
            let root = h(ROOTS[*size as usize - 1]);
            assert_eq!(
                verify_inclusion(&leaves[index as usize], index, *size, &want, &root),
                Ok(()),
                "inclusion of leaf {leaf} in {size}"
            );
            // The reference data's corruptions: wrong index, wrong size, wrong leaf, extra hash.
            if *size > 1 {
                assert!(
                    verify_inclusion(&leaves[index as usize], index ^ 1, *size, &want, &root)
                        .is_err()
                );
            }
            assert!(
                verify_inclusion(&leaves[index as usize], index, size * 2, &want, &root).is_err()
            );
            assert!(
                verify_inclusion(&leaf_hash(b"WrongLeaf"), index, *size, &want, &root).is_err()
            );
            let mut longer = want.clone();
            longer.push(root);
            assert!(
                verify_inclusion(&leaves[index as usize], index, *size, &longer, &root).is_err()
            );
        }
        for (m, n, want) in consistency {
            let want: Vec<Hash32> = want.iter().map(|x| h(x)).collect();
            assert_eq!(
                log.consistency_proof(*m, *n).expect("proof"),
                want,
                "consistency {m} -> {n}"
            );
            let (old, new) = (h(ROOTS[*m as usize - 1]), h(ROOTS[*n as usize - 1]));
            assert_eq!(
                verify_consistency(*m, *n, &old, &new, &want),
                Ok(()),
                "consistency {m} -> {n}"
            );
            if m != n {
                assert!(verify_consistency(*m, *n, &new, &old, &want).is_err());
                assert!(verify_consistency(*m, *n, &old, &new, &want[..want.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn cached_roots_match_plain_recursion_and_survive_serde() {
        let mut log = EvidenceLog::new();
        for n in 0..70usize {
            assert_eq!(log.root(), merkle_root(&leaves(n)), "n={n}");
            for m in 0..=n {
                assert_eq!(
                    log.root_at(m as u64).expect("in range"),
                    merkle_root(&leaves(m))
                );
            }
            let json = serde_json::to_string(&log).expect("serialise");
            let back: EvidenceLog = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, log);
            log.levels.push(leaves(n + 1)[n]);
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=33u64 {
            let log = EvidenceLog::from_leaves(leaves(n as usize));
            let root = log.root();
            for i in 0..n {
                let proof = log.inclusion_proof(i, n).expect("in range");
                let leaf = log.leaves()[i as usize];
                assert_eq!(
                    verify_inclusion(&leaf, i, n, &proof, &root),
                    Ok(()),
                    "n={n} i={i}"
                );
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, i, n, &proof, &root).is_err());
                if n > 1 {
                    assert!(
                        verify_inclusion(&leaf, (i + 1) % n, n, &proof, &root).is_err(),
                        "n={n} i={i}"
                    );
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(&leaf, i, n, &bad, &root).is_err());
                    assert!(
                        verify_inclusion(&leaf, i, n, &proof[..proof.len() - 1], &root).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let log = EvidenceLog::from_leaves(leaves(33));
        for n in 1..=33u64 {
            let new_root = log.root_at(n).expect("in range");
            for m in 1..=n {
                let old_root = log.root_at(m).expect("in range");
                let proof = log.consistency_proof(m, n).expect("in range");
                assert_eq!(
                    verify_consistency(m, n, &old_root, &new_root, &proof),
                    Ok(()),
                    "m={m} n={n}"
                );
                if m < n {
                    let mut bad = proof.clone();
                    bad[0][5] ^= 0x80;
                    assert!(
                        verify_consistency(m, n, &old_root, &new_root, &bad).is_err(),
                        "m={m} n={n}"
                    );
                    let wrong_old = leaf_hash(b"x");
                    assert!(verify_consistency(m, n, &wrong_old, &new_root, &proof).is_err());
                }
            }
        }
        assert!(log.consistency_proof(5, 4).is_err());
        assert!(log.inclusion_proof(3, 40).is_err());
    }
}
