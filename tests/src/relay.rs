//! A TCP relay whose target can be switched while it runs: a middlebox appearing in (or
//! disappearing from) a path. Switching also aborts the relay's live connections, as a
//! middlebox change would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Clone)]
pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<Mutex<(SocketAddr, Vec<AbortHandle>)>>,
}

impl Relay {
    /// Listen on 127.0.0.1:0 (on the current Tokio runtime) and relay to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((target, Vec::new())));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let target = st.lock().unwrap().0;
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                st.lock().unwrap().1.push(task.abort_handle());
            }
        });
        Relay { addr, state }
    }

    /// New connections go to `target`; live ones are cut.
    pub fn switch(&self, target: SocketAddr) {
        let mut s = self.state.lock().unwrap();
        s.0 = target;
        for h in s.1.drain(..) {
            h.abort();
        }
    }
}
