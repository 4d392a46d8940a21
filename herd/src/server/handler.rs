//! The line handler of every connection of a server: it hands each event
//! of the [`LineReceiver`](gyre_protocols::LineReceiver) to the server.

use std::rc::Rc;

use gyre_protocols::{LineContext, LineHandler};
use gyre_reactor::ConnectionLost;

use super::conn::{Conn, WriteFlow};
use super::state::Server;
use crate::metrics::Counter;

/// The line handler of every connection of a server.
pub(crate) struct ConnHandler {
    pub(super) conn: Rc<Conn>,
}

impl ConnHandler {
    fn server(&self) -> Option<Rc<Server>> {
        self.conn.server.upgrade()
    }
}

impl LineHandler for ConnHandler {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let transport = ctx.transport().clone();
        *self.conn.transport.borrow_mut() = Some(transport.clone());
        *self.conn.control.borrow_mut() = Some(ctx.control());
        if !self.conn.is_link() {
            // Links are not flow-controlled: two servers that both stopped
            // reading because both write buffers are full would wait forever.
            transport.register_producer(Rc::new(WriteFlow {
                conn: Rc::downgrade(&self.conn),
            }));
        }
        match self.server() {
            Some(server) => server.connection_made(&self.conn),
            None => ctx.lose_connection(),
        }
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        if self.conn.input_done.get() {
            return;
        }
        if let Some(server) = self.server() {
            server.line_received(&self.conn, Some(ctx), line);
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        if let Some(server) = self.server() {
            server.after_peer_line(&self.conn, ctx, data);
        }
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        if let Some(server) = self.server() {
            server.metrics.count(Counter::LimitLineLength);
            server.log.entry(format_args!(
                "line from {} longer than {} bytes ({} bytes buffered): closing after the earlier answers",
                self.conn.describe_peer(),
                ctx.max_length(),
                data.len()
            ));
        }
        self.conn.input_done.set(true);
        if self.conn.is_link() {
            ctx.lose_connection();
            return;
        }
        self.conn.update_flow();
        self.conn.maybe_finish();
    }

    fn eof_received(&mut self, ctx: &mut LineContext<'_>) -> bool {
        let rest = ctx.clear_line_buffer();
        if let Some(server) = self.server() {
            server.claim_ended(&self.conn);
            server.log.entry(format_args!(
                "end of input from {}",
                self.conn.describe_peer()
            ));
            if !self.conn.input_done.get() && !rest.is_empty() {
                // A final line without `\n` is still a command. (Complete
                // lines are all delivered before EOF is read; split anyway.)
                for line in rest.split(|&b| b == b'\n') {
                    if !line.is_empty() {
                        server.line_received(&self.conn, None, line);
                    }
                }
            }
        }
        self.conn.input_done.set(true);
        if self.conn.is_link() {
            return false;
        }
        self.conn.update_flow();
        self.conn.maybe_finish();
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        if let Some(server) = self.server() {
            server.connection_lost(&self.conn, &reason);
        }
        self.conn.transport.borrow_mut().take();
        self.conn.control.borrow_mut().take();
    }
}
