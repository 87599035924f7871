//! TCP segmentation and coalescing for a tun device whose packets carry a
//! virtio_net_hdr (IFF_VNET_HDR with TUNSETOFFLOAD): the kernel hands out TCP
//! super-segments of up to 64 KiB and takes them back the same way, so one
//! read(2) or write(2) moves dozens of packets instead of one.
//!
//! - Reading, [`split`] says what a packet from the kernel is: one finished
//!   packet (its checksum completed here when the kernel left that to us), or
//!   a super-segment that [`Segments::write`] cuts into MTU-sized packets,
//!   each with its own lengths, IPv4 id, sequence number, flags and checksums.
//! - Writing, [`Coalescer::plan`] groups in-order TCP segments of one flow
//!   in a batch, and [`Group::finish`] turns the first into the header of
//!   their super-segment (the kernel completes the checksum).
//!
//! Pure: bytes in, bytes out.

/// Bytes of the virtio_net_hdr in front of every packet on the tun.
pub const VNET_HDR_LEN: usize = 10;

/// The largest IP packet (IPv4 total length, or IPv6 payload length plus
/// the fixed header, kept to the same bound).
const MAX_IP_LEN: usize = 65535;

const NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

const PROTO_TCP: u8 = 6;
const TCP_CSUM_OFFSET: usize = 16;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;
const IPV4_DF: u8 = 0x40;

/// The virtio_net_hdr, in the legacy layout and host byte order the tun
/// device uses unless told otherwise (TUNSETVNETLE/BE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header of the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// A virtio_net_hdr that does not describe its packet, or asks for
/// something this device never enabled (UDP segmentation, ECN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOffload;

/// What a packet read from the tun turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One finished IP packet.
    One,
    /// A TCP super-segment, to be cut into [`Segments::count`] packets.
    Tcp(Segments),
}

/// Reads the header of a packet from the tun: completes a checksum the
/// kernel left unfinished, or describes how to cut a super-segment.
pub fn split(hdr: &VnetHdr, packet: &mut [u8]) -> Result<Split, BadOffload> {
    match hdr.gso_type {
        GSO_NONE if hdr.flags & NEEDS_CSUM != 0 => {
            complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
            Ok(Split::One)
        }
        GSO_NONE => Ok(Split::One),
        GSO_TCPV4 | GSO_TCPV6 => Segments::new(hdr, packet).map(Split::Tcp),
        _ => Err(BadOffload),
    }
}

/// Stores the Internet checksum of `packet[start..]` at `start + offset`,
/// where the kernel left the pseudo-header sum (CHECKSUM_PARTIAL).
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), BadOffload> {
    let field = start + offset;
    if field + 2 > packet.len() {
        return Err(BadOffload);
    }
    // 0 would mean "no checksum" to UDP; 0xffff is the same sum to TCP.
    let csum = match !fold(sum(&packet[start..])) {
        0 => 0xffff,
        c => c,
    };
    packet[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// How to cut one TCP super-segment into packets of `mss` payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    v6: bool,
    /// IP header length; the TCP header follows.
    ip_len: usize,
    /// IP and TCP header length; the payload follows.
    headers: usize,
    mss: usize,
    payload: usize,
}

impl Segments {
    fn new(hdr: &VnetHdr, packet: &[u8]) -> Result<Segments, BadOffload> {
        let v6 = hdr.gso_type == GSO_TCPV6;
        // csum_start is where the TCP header starts: past the IPv4 options
        // or the IPv6 extension headers. The kernel's hdr_len may cover
        // payload too: the TCP header's length is read from the packet.
        let ip_len = usize::from(hdr.csum_start);
        let fits = |n: usize| packet.len() >= n;
        let ip_ok = match (v6, packet.first().map(|b| b >> 4)) {
            (false, Some(4)) => {
                fits(20) && usize::from(packet[0] & 0xf) * 4 == ip_len && packet[9] == PROTO_TCP
            }
            (true, Some(6)) => fits(40) && ipv6_upper_layer(packet) == Some((ip_len, PROTO_TCP)),
            _ => false,
        };
        if !ip_ok
            || usize::from(hdr.csum_offset) != TCP_CSUM_OFFSET
            || !fits(ip_len + 20)
            || hdr.gso_size == 0
        {
            return Err(BadOffload);
        }
        let headers = ip_len + usize::from(packet[ip_len + 12] >> 4) * 4;
        if headers < ip_len + 20 || packet.len() <= headers {
            return Err(BadOffload);
        }
        Ok(Segments {
            v6,
            ip_len,
            headers,
            mss: hdr.gso_size.into(),
            payload: packet.len() - headers,
        })
    }

    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }

    /// Writes packet `i` of the super-segment `packet` (the one this was made
    /// from) to the start of `out`. Returns its length, or `None` when `out`
    /// is too small (or there is no packet `i`).
    pub fn write(&self, packet: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        let start = i.checked_mul(self.mss)?.checked_add(self.headers)?;
        let end = (start + self.mss).min(self.headers + self.payload);
        let chunk = packet.get(start..end).filter(|c| !c.is_empty())?;
        let len = self.headers + chunk.len();
        let seg = out.get_mut(..len)?;
        seg[..self.headers].copy_from_slice(&packet[..self.headers]);
        seg[self.headers..].copy_from_slice(chunk);

        if self.v6 {
            put_u16(seg, 4, (len - 40) as u16);
        } else {
            put_u16(seg, 2, len as u16);
            put_u16(seg, 4, u16_at(seg, 4).wrapping_add(i as u16));
            set_ipv4_header_checksum(seg);
        }
        let tcp = self.ip_len;
        let seq = u32_at(seg, tcp + 4).wrapping_add((i * self.mss) as u32);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        if end < self.headers + self.payload {
            seg[tcp + 13] &= !(FIN | PSH);
        }
        if i > 0 {
            seg[tcp + 13] &= !CWR;
        }
        put_u16(seg, tcp + TCP_CSUM_OFFSET, 0);
        let csum = !fold(pseudo_header_sum(seg, self.v6, len - tcp) + sum(&seg[tcp..]));
        put_u16(seg, tcp + TCP_CSUM_OFFSET, csum);
        Some(len)
    }
}

/// Where the upper-layer header of IPv6 packet `p` starts, and its
/// protocol, past the extension headers a super-segment may carry and be cut
/// with (hop-by-hop and destination options, a routing header with no
/// segments left); `None` when the chain runs off the packet. A routing
/// header with segments left ends the walk: the TCP checksum is then over
/// the final destination (RFC 8200 §8.1), which the IPv6 header does not
/// hold, so cutting could not compute it.
fn ipv6_upper_layer(p: &[u8]) -> Option<(usize, u8)> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const DESTINATION: u8 = 60;
    if p.len() < 40 {
        return None;
    }
    let (mut next, mut at) = (p[6], 40);
    loop {
        match next {
            HOP_BY_HOP | DESTINATION => {}
            ROUTING if *p.get(at + 3)? == 0 => {}
            _ => return Some((at, next)),
        }
        // Each header is at least 8 bytes: the walk ends.
        let len = (usize::from(*p.get(at + 1)?) + 1) * 8;
        next = p[at];
        at += len;
    }
}

/// What coalescing needs of a TCP packet.
#[derive(Debug, Clone, Copy)]
struct Tcp {
    v6: bool,
    ip_len: usize,
    headers: usize,
    payload: usize,
    seq: u32,
    flags: u8,
    /// Whether it may be part of a super-segment: plain headers, ACK with
    /// at most PSH, some payload, and checksums that hold.
    mergeable: bool,
}

/// The TCP segment in `p`, if it is a whole, unfragmented one whose flow can
/// be told.
fn parse_tcp(p: &[u8]) -> Option<Tcp> {
    let (v6, ip_len, plain_ip) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let unfragmented = u16_at(p, 6) & 0x3fff == 0;
            let whole = usize::from(u16_at(p, 2)) == p.len();
            if p[9] != PROTO_TCP || !unfragmented || !whole {
                return None;
            }
            let ihl = usize::from(p[0] & 0xf) * 4;
            (false, ihl, ihl == 20)
        }
        6 if p.len() >= 40 => {
            // Past extension headers too, so that the segment is seen as
            // its flow's (and ends its group) though it is never joined.
            let (ip_len, next) = ipv6_upper_layer(p)?;
            if next != PROTO_TCP || usize::from(u16_at(p, 4)) + 40 != p.len() {
                return None;
            }
            (true, ip_len, ip_len == 40)
        }
        _ => return None,
    };
    let th = p.get(ip_len..ip_len + 20)?;
    let headers = ip_len + usize::from(th[12] >> 4) * 4;
    if headers < ip_len + 20 || headers > p.len() {
        return None;
    }
    let flags = th[13];
    let payload = p.len() - headers;
    let mergeable = plain_ip
        && (flags == ACK || flags == ACK | PSH)
        && payload > 0
        && (v6 || fold(sum(&p[..20])) == 0xffff)
        && fold(pseudo_header_sum(p, v6, p.len() - ip_len) + sum(&p[ip_len..])) == 0xffff;
    Some(Tcp {
        v6,
        ip_len,
        headers,
        payload,
        seq: u32_at(th, 4),
        flags,
        mergeable,
    })
}

/// Whether `p`, which [`parse_tcp`] could not read, may still be a TCP
/// segment: an IPv4 fragment or one whose length is wrong, an IPv6 packet
/// whose extension headers hide what follows. It may belong to any flow
/// between its addresses.
fn may_be_tcp(p: &[u8]) -> bool {
    const UDP: u8 = 17;
    const ICMPV6: u8 = 58;
    match p.first().map(|b| b >> 4) {
        Some(4) => p.len() >= 20 && p[9] == PROTO_TCP,
        Some(6) => !matches!(ipv6_upper_layer(p), Some((_, UDP | ICMPV6)) | None),
        _ => false,
    }
}

/// Same IP version and addresses (`p` at least an IP header long).
fn same_addresses(a: &[u8], b: &[u8], v6: bool) -> bool {
    let addrs = if v6 { 8..40 } else { 12..20 };
    a[0] >> 4 == b[0] >> 4 && a[addrs.clone()] == b[addrs]
}

/// Same addresses and ports.
fn same_flow(a: &[u8], ta: &Tcp, b: &[u8], tb: &Tcp) -> bool {
    same_addresses(a, b, ta.v6) && a[ta.ip_len..ta.ip_len + 4] == b[tb.ip_len..tb.ip_len + 4]
}

/// Packets of one write: one packet, or TCP segments of one flow to be
/// written as one super-segment.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    head: usize,
    last: usize,
    count: usize,
    /// The head's TCP view, when it is a TCP packet.
    tcp: Option<Tcp>,
    /// Whether later segments of the flow may still join.
    open: bool,
    next_seq: u32,
    /// IP length of the super-segment so far.
    total: usize,
    psh: bool,
    /// Whether the last segment has the head's payload length (only the
    /// final segment of a super-segment may be shorter).
    last_full: bool,
    /// Under DF, the second segment had the head's IPv4 id: so must all.
    fixed_id: bool,
}

/// No next packet in a group.
const END: usize = usize::MAX;

/// Plans the writes of a batch; keeps its buffers from batch to batch.
#[derive(Debug, Default)]
pub struct Coalescer {
    groups: Vec<Group>,
    /// For each packet, the one after it in its group, or [`END`].
    next: Vec<usize>,
}

impl Coalescer {
    /// Groups `packets` (an empty one is skipped). A TCP segment joins the
    /// newest group of its flow when it continues it exactly; any other
    /// packet of that flow closes the group, so each flow's packets stay in
    /// order. Groups come in the order of their first packets.
    pub fn plan(&mut self, packets: &[&[u8]]) {
        self.groups.clear();
        self.next.clear();
        self.next.resize(packets.len(), END);
        for (i, &p) in packets.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let tcp = parse_tcp(p);
            if let Some(t) = &tcp {
                let open = self.groups.iter().rposition(|g| {
                    g.open
                        && g.tcp
                            .is_some_and(|gt| same_flow(packets[g.head], &gt, p, t))
                });
                if let Some(gi) = open {
                    let g = &mut self.groups[gi];
                    if g.accepts(packets[g.head], p, t) {
                        self.next[g.last] = i;
                        g.append(packets[g.head], p, i, t);
                        continue;
                    }
                    g.open = false;
                }
            } else if may_be_tcp(p) {
                // It might be any of these flows' next segment: joining
                // their later ones would write them before it.
                for g in self.groups.iter_mut().filter(|g| g.open) {
                    let v6 = g.tcp.is_some_and(|t| t.v6);
                    g.open = !same_addresses(packets[g.head], p, v6);
                }
            }
            self.groups.push(Group::new(i, p.len(), tcp));
        }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The packets of `group` after its head, in order.
    pub fn members(&self, group: &Group) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(self.next[group.head]), |&i| self.next.get(i).copied())
            .take_while(|&i| i != END)
    }
}

impl Group {
    fn new(head: usize, len: usize, tcp: Option<Tcp>) -> Group {
        let (open, next_seq, psh) = match &tcp {
            Some(t) => (
                t.mergeable,
                t.seq.wrapping_add(t.payload as u32),
                t.flags & PSH != 0,
            ),
            None => (false, 0, false),
        };
        Group {
            head,
            last: head,
            count: 1,
            tcp,
            open,
            next_seq,
            total: len,
            psh,
            last_full: true,
            fixed_id: false,
        }
    }

    /// Whether segment `p` (parsed as `t`) of this group's flow continues it.
    fn accepts(&self, head: &[u8], p: &[u8], t: &Tcp) -> bool {
        let Some(h) = &self.tcp else {
            return false;
        };
        t.mergeable
            && t.seq == self.next_seq
            && self.last_full
            && !self.psh
            && t.payload <= h.payload
            && self.total + t.payload <= MAX_IP_LEN
            && t.headers == h.headers
            && self.same_headers(head, h, p)
    }

    /// Every header field of `p` is what cutting the super-segment would
    /// give it back (the fields Linux's TCP GRO compares, and more): all but
    /// the lengths, checksums, sequence number, IPv4 id and PSH (which the
    /// super-segment takes from its last segment) must equal the head's.
    fn same_headers(&self, head: &[u8], h: &Tcp, p: &[u8]) -> bool {
        let ip_same = if h.v6 {
            // Traffic class, flow label; hop limit.
            head[..4] == p[..4] && head[7] == p[7]
        } else {
            // TOS; flags (DF, reserved); TTL. The id counts up from the
            // head's, or under DF stays the head's if the second segment's
            // did (Linux's GRO rule): stacks that follow RFC 6864 send
            // atomic datagrams with id 0. The kernel's cutting counts such
            // ids up, which RFC 6864 §4.1 allows: the one field that changes.
            let (head_id, id) = (u16_at(head, 4), u16_at(p, 4));
            let counted = !self.fixed_id && id == head_id.wrapping_add(self.count as u16);
            let fixed =
                head[6] & IPV4_DF != 0 && (self.count == 1 || self.fixed_id) && id == head_id;
            head[1] == p[1] && head[6] == p[6] && head[8] == p[8] && (counted || fixed)
        };
        let tcp = h.ip_len;
        // Acknowledgment number; header length, reserved bits and AE; flags
        // but PSH; window; urgent pointer; options.
        ip_same
            && head[tcp + 8..tcp + 13] == p[tcp + 8..tcp + 13]
            && head[tcp + 13] & !PSH == p[tcp + 13] & !PSH
            && head[tcp + 14..tcp + 16] == p[tcp + 14..tcp + 16]
            && head[tcp + 18..h.headers] == p[tcp + 18..h.headers]
    }

    fn append(&mut self, head: &[u8], p: &[u8], i: usize, t: &Tcp) {
        let mss = self.tcp.map_or(0, |h| h.payload);
        if self.count == 1 && !t.v6 {
            self.fixed_id = u16_at(p, 4) == u16_at(head, 4);
        }
        self.last = i;
        self.count += 1;
        self.next_seq = self.next_seq.wrapping_add(t.payload as u32);
        self.total += t.payload;
        self.psh = t.flags & PSH != 0;
        self.last_full = t.payload == mss;
    }

    /// Index of the first packet, the one written with the header.
    pub fn head(&self) -> usize {
        self.head
    }

    /// Packets in the group.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Header bytes of each packet after the head, left out of the write.
    pub fn headers(&self) -> usize {
        self.tcp.map_or(0, |t| t.headers)
    }

    /// Rewrites the head packet into the header of the whole group (lengths,
    /// IPv4 header checksum, PSH from the last segment, the pseudo-header sum
    /// in the TCP checksum) and returns the virtio_net_hdr to write before
    /// it. A group of one is left as it is, with an empty header.
    pub fn finish(&self, head: &mut [u8]) -> VnetHdr {
        let Some(t) = self.tcp.filter(|_| self.count > 1) else {
            return VnetHdr::default();
        };
        if t.v6 {
            put_u16(head, 4, (self.total - 40) as u16);
        } else {
            put_u16(head, 2, self.total as u16);
            set_ipv4_header_checksum(head);
        }
        if self.psh {
            head[t.ip_len + 13] |= PSH;
        }
        let partial = fold(pseudo_header_sum(head, t.v6, self.total - t.ip_len));
        put_u16(head, t.ip_len + TCP_CSUM_OFFSET, partial);
        VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: if t.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: t.headers as u16,
            gso_size: t.payload as u16,
            csum_start: t.ip_len as u16,
            csum_offset: TCP_CSUM_OFFSET as u16,
        }
    }
}

fn u16_at(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([p[i], p[i + 1]])
}

fn u32_at(p: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]])
}

fn put_u16(p: &mut [u8], i: usize, v: u16) {
    p[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// The one's-complement sum of `data` as big-endian words, not yet folded.
/// Summing 32-bit words is the same modulo 0xffff and twice as fast.
fn sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut s: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0; 4];
        tail[..rest.len()].copy_from_slice(rest);
        s += u64::from(u32::from_be_bytes(tail));
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The sum of the TCP/UDP pseudo-header of IP packet `p` for an upper-layer
/// length `len` (protocol TCP).
fn pseudo_header_sum(p: &[u8], v6: bool, len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum(addrs) + u64::from(PROTO_TCP) + len as u64
}

fn set_ipv4_header_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0xf) * 4;
    put_u16(p, 10, 0);
    let csum = !fold(sum(&p[..ihl]));
    put_u16(p, 10, csum);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum the slow, obvious way: 16-bit words, folded at
    /// every step. Independent of `sum`/`fold`.
    fn reference_checksum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut s: u32 = 0;
        for w in bytes.chunks(2) {
            let word = u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
            s += word;
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn pseudo(p: &[u8]) -> Vec<u8> {
        let l = ip_len(p);
        if p[0] >> 4 == 6 {
            let mut v = p[8..40].to_vec();
            v.extend_from_slice(&((p.len() - l) as u32).to_be_bytes());
            let next = if l == 40 { p[6] } else { PROTO_TCP };
            v.extend_from_slice(&[0, 0, 0, next]);
            v
        } else {
            let mut v = p[12..20].to_vec();
            v.extend_from_slice(&[0, p[9]]);
            v.extend_from_slice(&((p.len() - l) as u16).to_be_bytes());
            v
        }
    }

    /// The IP header's length, with IPv6 extension headers (the types the
    /// tests build) if any.
    fn ip_len(p: &[u8]) -> usize {
        if p[0] >> 4 == 6 {
            let (mut next, mut l) = (p[6], 40);
            while [0, 43, 44, 60].contains(&next) {
                next = p[l];
                l += (usize::from(p[l + 1]) + 1) * 8;
            }
            l
        } else {
            usize::from(p[0] & 0xf) * 4
        }
    }

    /// Whether the transport checksum (and the IPv4 header checksum) hold.
    fn checksums_hold(p: &[u8]) -> bool {
        let l = ip_len(p);
        let ip_ok = p[0] >> 4 == 6 || reference_checksum(&[&p[..l]]) == 0;
        ip_ok && reference_checksum(&[&pseudo(p), &p[l..]]) == 0
    }

    /// A TCP segment with correct checksums.
    #[derive(Clone)]
    struct Seg {
        v6: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
        id: u16,
        ttl: u8,
        /// TOS, or the IPv6 traffic class.
        tos: u8,
        /// The IPv6 flow label.
        label: u32,
        df: bool,
        sport: u16,
        /// The low half of TCP byte 12: reserved bits and AE (RFC 9768).
        reserved: u8,
        window: u16,
        urgent: u16,
        options: Vec<u8>,
        ip_options: Vec<u8>,
        /// IPv6 extension headers: type and what follows its first two bytes.
        ext: Vec<(u8, Vec<u8>)>,
    }

    fn seg(seq: u32, payload_len: usize) -> Seg {
        Seg {
            v6: false,
            seq,
            ack: 0x0102_0304,
            flags: ACK,
            payload: (0..payload_len)
                .map(|i| (i * 7 + seq as usize) as u8)
                .collect(),
            // Counting up with the segments, as Linux sends them.
            id: (seq as usize / payload_len.max(1)) as u16,
            ttl: 64,
            tos: 0,
            label: 0,
            df: true,
            sport: 40000,
            reserved: 0,
            window: 501,
            urgent: 0,
            // NOP, NOP, timestamp: as Linux sends them.
            options: vec![1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0],
            ip_options: vec![],
            ext: vec![],
        }
    }

    fn seg6(seq: u32, payload_len: usize) -> Seg {
        Seg {
            v6: true,
            ..seg(seq, payload_len)
        }
    }

    impl Seg {
        fn build(&self) -> Vec<u8> {
            let mut tcp = Vec::new();
            tcp.extend_from_slice(&self.sport.to_be_bytes());
            tcp.extend_from_slice(&5201u16.to_be_bytes());
            tcp.extend_from_slice(&self.seq.to_be_bytes());
            tcp.extend_from_slice(&self.ack.to_be_bytes());
            tcp.push((((20 + self.options.len()) / 4) << 4) as u8 | self.reserved);
            tcp.push(self.flags);
            tcp.extend_from_slice(&self.window.to_be_bytes());
            tcp.extend_from_slice(&[0, 0]);
            tcp.extend_from_slice(&self.urgent.to_be_bytes());
            tcp.extend_from_slice(&self.options);
            tcp.extend_from_slice(&self.payload);
            let mut p = if self.v6 {
                let ext_len: usize = self.ext.iter().map(|(_, b)| 2 + b.len()).sum();
                let first = self.ext.first().map_or(PROTO_TCP, |e| e.0);
                let mut ip = (6 << 28 | u32::from(self.tos) << 20 | self.label & 0xf_ffff)
                    .to_be_bytes()
                    .to_vec();
                ip.extend_from_slice(&((ext_len + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[first, self.ttl]);
                ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
                for (k, (_, body)) in self.ext.iter().enumerate() {
                    assert_eq!((2 + body.len()) % 8, 0, "extension header length");
                    let next = self.ext.get(k + 1).map_or(PROTO_TCP, |e| e.0);
                    ip.extend_from_slice(&[next, ((2 + body.len()) / 8 - 1) as u8]);
                    ip.extend_from_slice(body);
                }
                ip
            } else {
                let ihl = 20 + self.ip_options.len();
                let mut ip = vec![0x40 | (ihl / 4) as u8, self.tos];
                ip.extend_from_slice(&((ihl + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&self.id.to_be_bytes());
                ip.extend_from_slice(&[if self.df { IPV4_DF } else { 0 }, 0]);
                ip.extend_from_slice(&[self.ttl, PROTO_TCP, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2]);
                ip.extend_from_slice(&self.ip_options);
                let c = reference_checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                ip
            };
            let l = p.len();
            p.extend_from_slice(&tcp);
            let c = reference_checksum(&[&pseudo(&p), &p[l..]]);
            p[l + 16..l + 18].copy_from_slice(&c.to_be_bytes());
            assert!(checksums_hold(&p));
            p
        }
    }

    /// A super-segment as the kernel hands it out: one header, the whole
    /// payload, the pseudo-header sum in the TCP checksum.
    fn super_segment(s: &Seg, mss: u16) -> (VnetHdr, Vec<u8>) {
        let mut p = s.build();
        let l = ip_len(&p);
        let partial = !reference_checksum(&[&pseudo(&p)]);
        p[l + 16..l + 18].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: if s.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (l + 20 + s.options.len()) as u16,
            gso_size: mss,
            csum_start: l as u16,
            csum_offset: 16,
        };
        (hdr, p)
    }

    fn cut(hdr: &VnetHdr, packet: &mut [u8]) -> Vec<Vec<u8>> {
        let Ok(Split::Tcp(segments)) = split(hdr, packet) else {
            panic!("not a super-segment: {hdr:?}");
        };
        let mut out = [0u8; 9000];
        (0..segments.count())
            .map(|i| {
                let n = segments.write(packet, i, &mut out).expect("fits");
                out[..n].to_vec()
            })
            .collect()
    }

    fn headers_of(p: &[u8]) -> usize {
        let l = ip_len(p);
        l + usize::from(p[l + 12] >> 4) * 4
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 72,
            gso_size: 1368,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.encode()), h);
        assert_eq!(VnetHdr::default().encode(), [0; VNET_HDR_LEN]);
    }

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xff, 0xff, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        set_ipv4_header_checksum(&mut h);
        assert_eq!(&h[10..12], &[0xb8, 0x61]);
        // Odd lengths: the last byte is the high half of a word.
        for n in [0, 1, 2, 3, 5, 7, 1001] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
            assert_eq!(!fold(sum(&data)), reference_checksum(&[&data]), "{n}");
        }
    }

    #[test]
    fn super_segments_are_cut_into_valid_packets() {
        for v6 in [false, true] {
            // Odd sizes: a short last segment, an odd segment size.
            for (payload_len, mss) in [(5000, 1380), (4001, 1001), (1000, 1380), (2760, 1380)] {
                let mut s = seg(0xffff_f000, payload_len);
                s.v6 = v6;
                s.flags = ACK | PSH | FIN;
                s.id = 0xfffe;
                let (hdr, mut packet) = super_segment(&s, mss);
                let original = packet.clone();
                let segs = cut(&hdr, &mut packet);
                assert_eq!(segs.len(), payload_len.div_ceil(usize::from(mss)));
                let mut payload = Vec::new();
                for (i, p) in segs.iter().enumerate() {
                    let last = i + 1 == segs.len();
                    let h = headers_of(p);
                    assert!(checksums_hold(p), "v6={v6} segment {i}");
                    assert!(p.len() - h <= usize::from(mss));
                    assert!(last || p.len() - h == usize::from(mss));
                    let l = ip_len(p);
                    if v6 {
                        assert_eq!(usize::from(u16_at(p, 4)), p.len() - 40);
                    } else {
                        assert_eq!(usize::from(u16_at(p, 2)), p.len());
                        assert_eq!(u16_at(p, 4), 0xfffe_u16.wrapping_add(i as u16));
                    }
                    let seq = 0xffff_f000_u32.wrapping_add((i * usize::from(mss)) as u32);
                    assert_eq!(u32_at(p, l + 4), seq);
                    let want = if last { ACK | PSH | FIN } else { ACK };
                    assert_eq!(p[l + 13], want, "flags of segment {i}");
                    // Everything else in the headers is the original's.
                    assert_eq!(p[l + 8..l + 12], original[l + 8..l + 12]);
                    assert_eq!(p[l + 20..h], original[l + 20..h]);
                    payload.extend_from_slice(&p[h..]);
                }
                assert_eq!(payload, s.payload);
            }
        }
    }

    #[test]
    fn ipv6_extension_headers_are_copied_into_every_segment() {
        // Destination options (PadN), a routing header with no segments
        // left, both: csum_start is past them, and they stay in each packet.
        let dest_opts = (60, vec![1, 4, 0, 0, 0, 0]);
        let routing = (43, vec![0, 0, 0, 0, 0, 0]);
        for ext in [vec![dest_opts.clone()], vec![routing, dest_opts]] {
            let mut s = seg6(0xffff_ff00, 3000);
            s.flags = ACK | PSH;
            s.ext = ext;
            let (hdr, mut packet) = super_segment(&s, 1000);
            let l = ip_len(&packet);
            assert_eq!(usize::from(hdr.csum_start), l);
            let original = packet.clone();
            let segs = cut(&hdr, &mut packet);
            assert_eq!(segs.len(), 3);
            let mut payload = Vec::new();
            for (i, p) in segs.iter().enumerate() {
                assert!(checksums_hold(p), "segment {i}");
                assert_eq!(usize::from(u16_at(p, 4)), p.len() - 40);
                assert_eq!(p[..4], original[..4]);
                assert_eq!(p[6..l], original[6..l], "extension headers");
                let seq = 0xffff_ff00_u32.wrapping_add(i as u32 * 1000);
                assert_eq!(u32_at(p, l + 4), seq);
                payload.extend_from_slice(&p[headers_of(p)..]);
            }
            assert_eq!(payload, s.payload);
        }
    }

    #[test]
    fn ipv6_headers_a_super_segment_cannot_carry_are_refused() {
        // A routing header with segments left: the TCP checksum is over the
        // final destination, which is not in the IPv6 header.
        let mut s = seg6(0, 3000);
        s.ext = vec![(43, vec![0, 1, 0, 0, 0, 0])];
        let (hdr, mut packet) = super_segment(&s, 1000);
        assert_eq!(split(&hdr, &mut packet), Err(BadOffload));
        // A fragment header, and csum_start off the end of the chain.
        let mut s = seg6(0, 3000);
        s.ext = vec![(44, vec![0, 0, 0, 0, 0, 0])];
        let (hdr, mut packet) = super_segment(&s, 1000);
        let at_48 = VnetHdr {
            csum_start: 48,
            ..hdr
        };
        assert_eq!(split(&at_48, &mut packet), Err(BadOffload));
        let mut s = seg6(0, 3000);
        s.ext = vec![(60, vec![1, 4, 0, 0, 0, 0])];
        let (hdr, packet) = super_segment(&s, 1000);
        for start in [40, 56] {
            let h = VnetHdr {
                csum_start: start,
                ..hdr
            };
            assert_eq!(split(&h, &mut packet.clone()), Err(BadOffload), "{start}");
        }
    }

    #[test]
    fn cwr_stays_on_the_first_segment_only() {
        let mut s = seg(1, 3000);
        s.flags = ACK | CWR;
        let (hdr, mut packet) = super_segment(&s, 1000);
        let segs = cut(&hdr, &mut packet);
        let flags: Vec<u8> = segs.iter().map(|p| p[33]).collect();
        assert_eq!(flags, [ACK | CWR, ACK, ACK]);
    }

    #[test]
    fn ip_options_are_copied_into_every_segment() {
        let mut s = seg(1, 2500);
        s.ip_options = vec![1, 1, 1, 0]; // NOPs, end of list
        let (hdr, mut packet) = super_segment(&s, 1000);
        let segs = cut(&hdr, &mut packet);
        assert_eq!(segs.len(), 3);
        for p in &segs {
            assert_eq!(p[0], 0x46);
            assert_eq!(&p[20..24], &[1, 1, 1, 0]);
            assert!(checksums_hold(p));
        }
    }

    #[test]
    fn an_unfinished_checksum_is_completed() {
        // A UDP datagram as the kernel hands it out with TUN_F_CSUM.
        let mut p = vec![
            0x45, 0, 0, 31, 0, 1, 0, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2,
        ];
        set_ipv4_header_checksum(&mut p);
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 11, 0, 0, b'a', b'b', b'c']);
        let partial = !reference_checksum(&[&pseudo(&p)]);
        p[26..28].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert_eq!(split(&hdr, &mut p), Ok(Split::One));
        assert!(checksums_hold(&p));
        // Without the flag the packet is finished already and left alone.
        let before = p.clone();
        assert_eq!(split(&VnetHdr::default(), &mut p), Ok(Split::One));
        assert_eq!(p, before);
        // A checksum field past the end is refused.
        let far = VnetHdr {
            csum_offset: 20,
            ..hdr
        };
        assert_eq!(split(&far, &mut p), Err(BadOffload));
    }

    #[test]
    fn headers_that_do_not_match_the_packet_are_refused() {
        let (hdr, packet) = super_segment(&seg(1, 3000), 1000);
        let bad = [
            VnetHdr { gso_type: 3, ..hdr }, // UDP fragmentation
            VnetHdr { gso_type: 5, ..hdr }, // UDP segmentation
            VnetHdr {
                gso_type: GSO_TCPV4 | 0x80,
                ..hdr
            }, // ECN
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..hdr
            }, // not IPv6
            VnetHdr {
                csum_start: 24,
                ..hdr
            }, // not the IPv4 header length
            VnetHdr {
                csum_offset: 6,
                ..hdr
            }, // not the TCP checksum
            VnetHdr { gso_size: 0, ..hdr },
        ];
        for h in bad {
            assert_eq!(split(&h, &mut packet.clone()), Err(BadOffload), "{h:?}");
        }
        // Headers only, or cut inside them.
        assert_eq!(split(&hdr, &mut packet[..52].to_vec()), Err(BadOffload));
        assert_eq!(split(&hdr, &mut packet[..30].to_vec()), Err(BadOffload));
        // Not TCP.
        let mut udp = packet.clone();
        udp[9] = 17;
        assert_eq!(split(&hdr, &mut udp), Err(BadOffload));
    }

    #[test]
    fn a_segment_that_does_not_fit_is_refused() {
        let (hdr, mut packet) = super_segment(&seg(1, 3000), 1000);
        let Ok(Split::Tcp(segments)) = split(&hdr, &mut packet) else {
            panic!("a super-segment");
        };
        let mut small = [0u8; 1000];
        assert_eq!(segments.write(&packet, 0, &mut small), None);
        let mut big = [0u8; 2000];
        assert_eq!(segments.write(&packet, 3, &mut big), None, "no 4th segment");
        assert_eq!(segments.write(&packet, 2, &mut big), Some(1052));
    }

    /// Plans `packets` and returns the groups as lists of indices.
    fn plan(packets: &[Vec<u8>]) -> Vec<Vec<usize>> {
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut c = Coalescer::default();
        c.plan(&refs);
        c.groups()
            .iter()
            .map(|g| {
                let mut v = vec![g.head()];
                v.extend(c.members(g));
                assert_eq!(v.len(), g.count());
                v
            })
            .collect()
    }

    /// Joins a group as the tun writer does, then lets the kernel's side
    /// (`split`) cut it again.
    fn coalesce_and_cut(packets: &[Vec<u8>]) -> (VnetHdr, Vec<u8>, Vec<Vec<u8>>) {
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut c = Coalescer::default();
        c.plan(&refs);
        assert_eq!(c.groups().len(), 1, "one group");
        let g = c.groups()[0];
        let mut head = packets[g.head()].clone();
        let hdr = g.finish(&mut head);
        let mut joined = head;
        for m in c.members(&g) {
            joined.extend_from_slice(&packets[m][g.headers()..]);
        }
        let cut_again = cut(&hdr, &mut joined.clone());
        (hdr, joined, cut_again)
    }

    #[test]
    fn in_order_segments_become_one_super_segment() {
        for v6 in [false, true] {
            let mut s = seg(7, 4001);
            s.v6 = v6;
            s.flags = ACK | PSH;
            s.df = false;
            let (hdr, mut packet) = super_segment(&s, 1300);
            let segs = cut(&hdr, &mut packet);
            assert_eq!(plan(&segs), [vec![0, 1, 2, 3]]);
            let (hdr2, mut joined, again) = coalesce_and_cut(&segs);
            assert_eq!(
                again, segs,
                "v6={v6}: cutting it again gives the same packets"
            );
            assert_eq!(hdr2.gso_size, 1300);
            assert_eq!(hdr2.flags, NEEDS_CSUM);
            assert_eq!(usize::from(hdr2.hdr_len), headers_of(&segs[0]));
            // The kernel completes the checksum over the whole super-segment.
            let l = ip_len(&joined);
            complete_checksum(&mut joined, l, 16).unwrap();
            assert!(checksums_hold(&joined));
            assert_eq!(joined[l + 13], ACK | PSH);
        }
    }

    #[test]
    fn flows_are_grouped_apart_and_keep_their_order() {
        let a = |seq| seg(seq, 1000).build();
        let b = |seq| {
            let mut s = seg(seq, 1000);
            s.sport = 40001;
            s.build()
        };
        let mut pure_ack = seg(3000, 0);
        pure_ack.sport = 40000;
        let packets = [
            a(0),
            b(0),
            a(1000),
            b(1000),
            pure_ack.build(),
            a(2000),
            a(3000),
        ];
        // A's pure ACK ends A's first group, and A goes on in a new one.
        assert_eq!(
            plan(&packets),
            [vec![0, 2], vec![1, 3], vec![4], vec![5, 6]]
        );
    }

    #[test]
    fn empty_slots_and_other_packets_pass_alone() {
        let udp = {
            let mut p = seg(0, 100).build();
            p[9] = 17;
            p
        };
        let packets = [seg(0, 1000).build(), vec![], udp, seg(1000, 1000).build()];
        assert_eq!(plan(&packets), [vec![0, 3], vec![2]]);
        let mut c = Coalescer::default();
        c.plan(&[udp_like().as_slice(), &[]]);
        let g = c.groups()[0];
        let mut p = udp_like();
        assert_eq!(g.finish(&mut p), VnetHdr::default());
        assert_eq!(p, udp_like(), "a group of one is written as it is");
    }

    fn udp_like() -> Vec<u8> {
        vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ]
    }

    #[test]
    fn segments_that_must_not_be_joined_are_not() {
        type Change = fn(&mut Seg);
        let cases: [(&str, Change); 19] = [
            ("out of order", |s| s.seq += 1),
            ("other flow", |s| s.sport += 1),
            ("FIN", |s| s.flags |= FIN),
            ("SYN", |s| s.flags |= 0x02),
            ("RST", |s| s.flags |= 0x04),
            ("URG", |s| s.flags |= 0x20),
            ("ECE", |s| s.flags |= 0x40),
            ("CWR", |s| s.flags |= CWR),
            ("no ACK", |s| s.flags = PSH),
            ("other ack", |s| s.ack += 1),
            ("other window", |s| s.window += 1),
            ("other urgent pointer", |s| s.urgent = 1),
            ("AE", |s| s.reserved = 1),
            ("other TCP options", |s| s.options[11] = 9),
            ("IP options", |s| s.ip_options = vec![1, 1, 1, 0]),
            ("other TTL", |s| s.ttl = 63),
            ("other TOS", |s| s.tos = 0x10),
            ("other DF", |s| s.df = false),
            ("longer than the first", |s| s.payload.push(0)),
        ];
        for (what, change) in cases {
            let mut second = seg(1000, 1000);
            change(&mut second);
            let packets = [seg(0, 1000).build(), second.build()];
            assert_eq!(plan(&packets).len(), 2, "{what}");
        }
    }

    #[test]
    fn ipv4_ids_count_up_or_stay_fixed_under_df() {
        let build = |seq, id, df| {
            let mut s = seg(seq, 1000);
            (s.id, s.df) = (id, df);
            s.build()
        };
        let run = |ids: &[u16], df| {
            let packets: Vec<Vec<u8>> = (0..ids.len())
                .map(|k| build(k as u32 * 1000, ids[k], df))
                .collect();
            plan(&packets)
        };
        assert_eq!(run(&[9, 10, 11], false), [vec![0, 1, 2]]);
        assert_eq!(run(&[9, 9], false), [vec![0], vec![1]]);
        assert_eq!(run(&[9, 10, 11], true), [vec![0, 1, 2]]);
        // Under DF a fixed id (RFC 6864), as Linux's GRO takes it; not a
        // random one, nor a run that switches.
        assert_eq!(run(&[0, 0, 0], true), [vec![0, 1, 2]]);
        assert_eq!(run(&[9, 4711], true), [vec![0], vec![1]]);
        assert_eq!(run(&[9, 9, 10], true), [vec![0, 1], vec![2]]);
        assert_eq!(run(&[9, 10, 10], true), [vec![0, 1], vec![2]]);
        // Cut again, a fixed run comes back counted up, all else unchanged.
        let fixed: Vec<Vec<u8>> = (0..3).map(|k| build(k * 1000, 0, true)).collect();
        let (_, _, again) = coalesce_and_cut(&fixed);
        for (k, (got, want)) in again.iter().zip(&fixed).enumerate() {
            let mut want = want.clone();
            put_u16(&mut want, 4, k as u16);
            set_ipv4_header_checksum(&mut want);
            assert_eq!(*got, want, "segment {k}");
        }
    }

    #[test]
    fn ipv6_fields_must_agree() {
        let base = seg6(0, 1000).build();
        let mut hop = seg6(1000, 1000).build();
        hop[7] = 1;
        let mut label = seg6(1000, 1000).build();
        label[3] = 1;
        assert_eq!(plan(&[base.clone(), seg6(1000, 1000).build()]).len(), 1);
        assert_eq!(plan(&[base.clone(), hop]).len(), 2, "hop limit");
        assert_eq!(plan(&[base, label]).len(), 2, "flow label");
        // An IPv6 and an IPv4 segment with the same ports are other flows.
        assert_eq!(
            plan(&[seg6(0, 1000).build(), seg(1000, 1000).build()]).len(),
            2
        );
    }

    #[test]
    fn a_segment_that_cannot_be_read_ends_its_flows_group() {
        // Behind IPv6 extension headers (a pure ACK), or an IPv4 fragment (a
        // retransmission): the segment after it must not join the group
        // before it, or it would be written first.
        let mut hidden6 = seg6(1000, 0);
        hidden6.ext = vec![(60, vec![1, 4, 0, 0, 0, 0])];
        let six = [
            seg6(0, 1000).build(),
            hidden6.build(),
            seg6(1000, 1000).build(),
        ];
        assert_eq!(plan(&six), [vec![0], vec![1], vec![2]]);
        let mut fragment = seg(0, 1000).build();
        fragment[6] |= 0x20; // more fragments
        set_ipv4_header_checksum(&mut fragment);
        let mut other_host = seg(2000, 1000).build();
        other_host[19] = 3; // another destination: not the flow's
        set_ipv4_header_checksum(&mut other_host);
        let four = [
            seg(0, 1000).build(),
            fragment,
            seg(1000, 1000).build(),
            other_host,
            seg(2000, 1000).build(),
        ];
        assert_eq!(plan(&four), [vec![0], vec![1], vec![2, 4], vec![3]]);
        // UDP between the same hosts is no TCP segment: the group goes on.
        let mut udp = seg(0, 100).build();
        udp[9] = 17;
        set_ipv4_header_checksum(&mut udp);
        let packets = [seg(0, 1000).build(), udp, seg(1000, 1000).build()];
        assert_eq!(plan(&packets), [vec![0, 2], vec![1]]);
    }

    #[test]
    fn a_bad_checksum_keeps_a_segment_out() {
        let mut second = seg(1000, 1000).build();
        *second.last_mut().unwrap() ^= 1;
        assert_eq!(plan(&[seg(0, 1000).build(), second]).len(), 2);
        let mut bad_ip = seg(1000, 1000).build();
        bad_ip[8] ^= 1; // TTL changed without the header checksum
        assert_eq!(plan(&[seg(0, 1000).build(), bad_ip]).len(), 2);
    }

    #[test]
    fn a_short_or_pushed_segment_ends_its_group() {
        // Short in the middle: the next one starts a new group.
        let with_id = |seq, len, id| {
            let mut s = seg(seq, len);
            s.id = id;
            s.build()
        };
        let short = [
            with_id(0, 1000, 0),
            with_id(1000, 500, 1),
            with_id(1500, 1000, 2),
        ];
        assert_eq!(plan(&short), [vec![0, 1], vec![2]]);
        let mut pushed = seg(1000, 1000);
        pushed.flags = ACK | PSH;
        let packets = [
            seg(0, 1000).build(),
            pushed.build(),
            seg(2000, 1000).build(),
        ];
        assert_eq!(plan(&packets), [vec![0, 1], vec![2]]);
    }

    #[test]
    fn a_super_segment_stays_under_64_kib() {
        let packets: Vec<Vec<u8>> = (0..60).map(|i| seg(i * 1400, 1400).build()).collect();
        let groups = plan(&packets);
        assert_eq!(groups.len(), 2);
        let first_len = 52 + groups[0].len() * 1400;
        assert!(first_len <= MAX_IP_LEN && first_len + 1400 > MAX_IP_LEN);
    }

    /// xorshift64*: seeded, so a failure names the seed that reproduces it.
    /// Hand-written rather than proptest: the property needs no shrinking
    /// (a failure names the packet and the byte), and it stays deterministic
    /// and free of a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }
    }

    /// One TCP flow of a random batch: the header its next segment starts
    /// from, and its sender's state.
    struct Flow {
        template: Seg,
        mss: usize,
        /// Sends every packet with the same IPv4 id.
        fixed_id: bool,
    }

    impl Flow {
        fn new(rng: &mut Rng, sport: u16) -> Flow {
            let mut template = seg(rng.next() as u32, 0);
            template.v6 = rng.one_in(2);
            template.sport = sport;
            template.id = rng.next() as u16;
            template.df = !rng.one_in(4);
            template.ack = rng.next() as u32;
            template.window = rng.next() as u16;
            template.ttl = 64;
            if rng.one_in(3) {
                template.options.clear(); // no timestamps
            }
            let mss = [1, 7, 100, 536, 1000, 1368, 1380][rng.below(7) as usize];
            let fixed_id = rng.one_in(4);
            Flow {
                template,
                mss,
                fixed_id,
            }
        }

        /// The next packet the flow's sender sends: mostly a full in-order
        /// segment, sometimes one whose header or sequence changed, for one
        /// packet or from then on.
        fn next(&mut self, rng: &mut Rng) -> Vec<u8> {
            if rng.one_in(12) {
                self.change(rng); // from now on: a window update, ...
            }
            let mut s = self.template.clone();
            if rng.one_in(12) {
                let mut once = Flow {
                    template: s,
                    mss: self.mss,
                    fixed_id: self.fixed_id,
                };
                once.change(rng);
                s = once.template;
            }
            let len = match rng.below(10) {
                0 => rng.below(self.mss as u64) as usize, // short, or a pure ACK
                _ => self.mss,
            };
            s.payload = (0..len).map(|_| rng.next() as u8).collect();
            if s.flags & 0x02 != 0 {
                s.payload.clear();
            }
            let p = s.build();
            // The sender's next sequence number and id, unless it changed
            // them itself (a gap, a retransmission, a fixed id).
            self.template.seq = self.template.seq.wrapping_add(len as u32);
            if !self.fixed_id {
                self.template.id = self.template.id.wrapping_add(1);
            }
            p
        }

        fn change(&mut self, rng: &mut Rng) {
            let t = &mut self.template;
            match rng.below(17) {
                0 => t.window = rng.next() as u16,
                1 => t.ack = t.ack.wrapping_add(rng.below(3000) as u32 + 1),
                2 => t.urgent = rng.next() as u16,
                3 => t.reserved = rng.below(16) as u8,
                4 => t.ttl = rng.next() as u8,
                5 => t.tos = rng.next() as u8,
                6 => t.label = rng.next() as u32 & 0xf_ffff,
                7 => t.df = !t.df,
                8 if !t.options.is_empty() => t.options[7] = rng.next() as u8, // TSval
                9 => {
                    t.flags = [
                        ACK | PSH,
                        ACK | FIN,
                        ACK | CWR,
                        ACK | 0x40,
                        ACK | 0x20,
                        0x02,
                        0x04,
                    ][rng.below(7) as usize]
                }
                10 => t.flags = ACK,
                11 => t.seq = t.seq.wrapping_add(rng.below(5000) as u32 + 1), // a gap
                12 => t.seq = t.seq.wrapping_sub(rng.below(5000) as u32 + 1), // sent again
                13 => t.id = t.id.wrapping_sub(1),                            // a fixed id
                14 => t.id = rng.next() as u16,
                15 => t.ip_options = vec![1, 1, 1, 0],
                16 => t.ext = vec![(60, vec![1, 4, 0, 0, 0, 0])],
                _ => {}
            }
        }
    }

    /// A random batch of at most 64 packets: a few interleaved TCP flows,
    /// with now and then a packet whose checksum is broken, a UDP datagram
    /// or an empty slot.
    fn random_batch(rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut flows: Vec<Flow> = (0..1 + rng.below(3))
            .map(|k| Flow::new(rng, 40000 + k as u16))
            .collect();
        (0..1 + rng.below(64))
            .map(|_| match rng.below(40) {
                0 => vec![],
                1 => udp_like(),
                n => {
                    let k = rng.below(flows.len() as u64) as usize;
                    let mut p = flows[k].next(rng);
                    if n == 2 {
                        let i = rng.below(p.len() as u64) as usize;
                        p[i] ^= 1 << rng.below(8);
                    }
                    p
                }
            })
            .collect()
    }

    /// The addresses and ports of a TCP packet, found without the code under
    /// test (and without trusting a packet whose bits were flipped).
    fn flow_key(p: &[u8]) -> Option<Vec<u8>> {
        let (addrs, mut next, mut l) = match p.first()? >> 4 {
            4 => (12..20, *p.get(9)?, usize::from(p[0] & 0xf) * 4),
            6 => (8..40, *p.get(6)?, 40),
            _ => return None,
        };
        while addrs.start == 8 && [0, 43, 44, 60].contains(&next) {
            next = *p.get(l)?;
            l += (usize::from(*p.get(l + 1)?) + 1) * 8;
        }
        if next != PROTO_TCP {
            return None;
        }
        Some([p.get(addrs)?, p.get(l..l + 4)?].concat())
    }

    /// Plans, joins and cuts again `packets` as the tun writer and the
    /// kernel do; panics unless every packet comes back byte for byte, once,
    /// in its flow's order. Returns the groups of more than one packet.
    fn round_trip(packets: &[Vec<u8>], seed: u64) -> usize {
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut c = Coalescer::default();
        c.plan(&refs);
        let mut written = Vec::new();
        let mut joined_groups = 0;
        for g in c.groups() {
            let members: Vec<usize> = std::iter::once(g.head()).chain(c.members(g)).collect();
            assert_eq!(members.len(), g.count(), "seed {seed}");
            let mut head = packets[g.head()].clone();
            let hdr = g.finish(&mut head);
            let back = if g.count() == 1 {
                assert_eq!(hdr, VnetHdr::default(), "seed {seed}");
                vec![head]
            } else {
                joined_groups += 1;
                let mut joined = head;
                for &m in &members[1..] {
                    joined.extend_from_slice(&packets[m][g.headers()..]);
                }
                cut(&hdr, &mut joined)
            };
            assert_eq!(back.len(), members.len(), "seed {seed}: {members:?}");
            // A run of one IPv4 id under DF comes back counted up.
            let head = &packets[g.head()];
            let fixed_id = head[0] >> 4 == 4
                && members.len() > 1
                && members.iter().all(|&m| packets[m][4..6] == head[4..6]);
            for (k, (got, &i)) in back.iter().zip(&members).enumerate() {
                let mut want = packets[i].clone();
                if fixed_id {
                    assert_ne!(head[6] & IPV4_DF, 0, "seed {seed}: a fixed id without DF");
                    put_u16(&mut want, 4, u16_at(head, 4).wrapping_add(k as u16));
                    set_ipv4_header_checksum(&mut want);
                }
                if let Some(at) =
                    (0..want.len().max(got.len())).find(|&b| got.get(b) != want.get(b))
                {
                    panic!(
                        "seed {seed}: packet {i} of group {members:?} came back changed at \
                         byte {at} (IP header {} bytes, TCP header {} bytes)",
                        ip_len(&want),
                        headers_of(&want) - ip_len(&want)
                    );
                }
            }
            written.extend(members);
        }
        // Each packet once; each flow's (and all others') in order, since a
        // flow's later group starts after its earlier one ended.
        let mut all: Vec<usize> = written.clone();
        all.sort_unstable();
        let nonempty: Vec<usize> = (0..packets.len())
            .filter(|&i| !packets[i].is_empty())
            .collect();
        assert_eq!(all, nonempty, "seed {seed}");
        let flow_of = |i: usize| flow_key(&packets[i]);
        for (a, &i) in written.iter().enumerate() {
            for &j in &written[a + 1..] {
                if flow_of(i).is_some() && flow_of(i) == flow_of(j) {
                    assert!(i < j, "seed {seed}: packet {j} written before {i}");
                }
            }
        }
        joined_groups
    }

    /// The fields joining must change are those of the super-segment: its IP
    /// length, IPv4 header checksum, TCP checksum (the pseudo-header sum) and
    /// PSH (the last segment's). Cutting gives each packet back its own, and
    /// its own sequence number, IPv4 id and FIN/PSH/CWR from the head's. The
    /// one field that comes back changed is the IPv4 id (and so the header
    /// checksum) of a run under DF with one fixed id, as RFC 6864 §4.1 allows:
    /// it is counted up. Every other byte is compared.
    #[test]
    fn random_flows_come_back_from_plan_join_and_cut_unchanged() {
        let (mut joined, mut batches) = (0, 0);
        for seed in 1..=4000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let packets = random_batch(&mut rng);
            joined += round_trip(&packets, seed);
            batches += 1;
        }
        // The property is only worth something if joining happened a lot.
        assert!(
            joined > 3 * batches,
            "{joined} joined groups in {batches} batches"
        );
    }
}
