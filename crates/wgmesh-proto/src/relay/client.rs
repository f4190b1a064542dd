//! A node's side of one relay, with no IO: say hello until the relay
//! registers us, keep the registration alive, wrap sends, unwrap what the
//! relay delivers, and notice when the relay is gone.
//!
//! The caller owns the transport (the engine's UDP socket, or a
//! WebSocket): it hands in frames from the relay ([`ClientSession::handle_frame`])
//! and the time ([`ClientSession::handle_timeout`], with a fresh random
//! nonce in case a hello is due), and sends what [`ClientSession::poll_transmit`]
//! gives it to the relay.
//!
//! It does not choose among relays or decide when to use one: that is the
//! path manager's ([`crate::disco::path`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wgmesh_core::key::{PrivateKey, PublicKey};

use super::hello::{HelloError, HelloSealer};
use super::wire::{Frame, FrameError, RefuseReason};

/// Hellos are resent this often until the relay answers.
pub const HELLO_RETRY: Duration = Duration::from_secs(1);
/// After a refusal, hellos are retried this much more slowly (the node
/// may be enrolled meanwhile, or the clock fixed).
pub const REFUSED_RETRY: Duration = Duration::from_secs(3);
/// A keepalive goes to the relay this often while registered (the relay
/// drops registrations idle for 60 s; UDP NAT mappings last 30 s or more).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// With nothing from the relay for this long, the registration is taken
/// as lost and hellos start again.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(40);

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Saying hello.
    Connecting,
    /// The relay registered us: sends are forwarded.
    Registered,
    /// The relay refused our hello (retried every [`REFUSED_RETRY`]).
    Refused(RefuseReason),
}

/// What the relay told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Registered,
    /// Refused (a hello, or a frame while the relay had no registration for
    /// us; then we say hello again).
    Refused(RefuseReason),
    /// A payload from `from`, exactly as `from` sent it.
    Received {
        from: PublicKey,
        payload: Vec<u8>,
    },
    /// The relay has no registration for `key`: a send to it went nowhere.
    PeerGone(PublicKey),
    /// The relay went silent for [`SILENCE_TIMEOUT`]; saying hello again.
    Lost,
}

/// Why a frame from the relay was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("a frame only a node sends, from the relay")]
    Unexpected,
    #[error(transparent)]
    Hello(#[from] HelloError),
}

/// One node's session with one relay.
#[derive(Debug)]
pub struct ClientSession {
    sealer: HelloSealer,
    relay: PublicKey,
    state: ClientState,
    /// When the next hello or keepalive is due.
    next_send: Option<Instant>,
    last_rx: Option<Instant>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// A session of the node `private` with the relay whose static key is
    /// `relay`; the first hello goes out at the first
    /// [`ClientSession::handle_timeout`].
    pub fn new(private: &PrivateKey, relay: PublicKey) -> Result<Self, ClientError> {
        Ok(Self {
            sealer: HelloSealer::new(private, &relay)?,
            relay,
            state: ClientState::Connecting,
            next_send: None,
            last_rx: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    pub fn relay(&self) -> PublicKey {
        self.relay
    }

    pub fn node(&self) -> PublicKey {
        self.sealer.node()
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_registered(&self) -> bool {
        self.state == ClientState::Registered
    }

    /// Queues `payload` for `to`. Sent whatever the state (the relay
    /// answers "not registered" if it does not know us, which starts a new
    /// hello); the caller decides whether the relay is worth using.
    pub fn send(&mut self, to: PublicKey, payload: &[u8]) -> Result<(), FrameError> {
        let frame = Frame::Send { to, payload }.to_vec()?;
        self.transmits.push_back(frame);
        Ok(())
    }

    /// A frame from the relay.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ClientError> {
        let frame = Frame::parse(bytes)?;
        self.last_rx = Some(now);
        match frame {
            Frame::ServerHello { .. } => {
                if self.state != ClientState::Registered {
                    self.state = ClientState::Registered;
                    self.events.push_back(ClientEvent::Registered);
                }
                self.next_send = Some(now + KEEPALIVE_INTERVAL);
            }
            Frame::Refused(reason) => {
                self.events.push_back(ClientEvent::Refused(reason));
                if reason == RefuseReason::NotRegistered {
                    // The relay lost us (restart, idle): hello again now.
                    self.state = ClientState::Connecting;
                    self.next_send = Some(now);
                } else {
                    self.state = ClientState::Refused(reason);
                    self.next_send = Some(now + REFUSED_RETRY);
                }
            }
            Frame::Recv { from, payload } => self.events.push_back(ClientEvent::Received {
                from,
                payload: payload.to_vec(),
            }),
            Frame::PeerGone(key) => self.events.push_back(ClientEvent::PeerGone(key)),
            Frame::Keepalive => {}
            Frame::ClientHello(_) | Frame::Send { .. } => return Err(ClientError::Unexpected),
        }
        Ok(())
    }

    /// Sends what is due: a hello (made at wall-clock `unix_ms` with
    /// `nonce`, fresh random bytes, used only if a hello goes out) or a
    /// keepalive; notices a silent relay.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64, nonce: [u8; 24]) {
        if self.state == ClientState::Registered
            && self
                .last_rx
                .is_some_and(|t| now.saturating_duration_since(t) >= SILENCE_TIMEOUT)
        {
            self.state = ClientState::Connecting;
            self.events.push_back(ClientEvent::Lost);
            self.next_send = Some(now);
        }
        if self.next_send.is_some_and(|t| t > now) {
            return;
        }
        match self.state {
            ClientState::Registered => {
                self.transmits.push_back(vec![super::wire::KEEPALIVE]);
                self.next_send = Some(now + KEEPALIVE_INTERVAL);
            }
            ClientState::Connecting | ClientState::Refused(_) => {
                let hello = self.sealer.hello(unix_ms, nonce);
                let mut out = Vec::new();
                Frame::ClientHello(hello).emit(&mut out);
                self.transmits.push_back(out);
                self.next_send = Some(
                    now + if matches!(self.state, ClientState::Refused(_)) {
                        REFUSED_RETRY
                    } else {
                        HELLO_RETRY
                    },
                );
            }
        }
    }

    /// When [`ClientSession::handle_timeout`] is next due (now, before the
    /// first hello).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silence = match self.state {
            ClientState::Registered => self.last_rx.map(|t| t + SILENCE_TIMEOUT),
            _ => None,
        };
        match (self.next_send, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True until the first hello went out: call `handle_timeout` now.
    pub fn wants_hello_now(&self) -> bool {
        self.next_send.is_none()
    }

    /// A frame for the relay.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}
