//! The peer to beat: the `\n` line echo as a tokio user would write it, on
//! the current-thread runtime (one thread, like gyre's reactor).
//!
//! `cargo run --release --example tokio_line_echo -- 127.0.0.1:0` prints
//! `tokio_line_echo listening on ADDRESS` (scripts read the port from it).
//! Each connection is a task: `BufReader::read_until(b'\n')`, write the line
//! into a `BufWriter`, and flush once no more input is buffered, so a
//! pipelined burst of lines is answered with one write (as gyre does), not
//! one syscall per line. A line over 4,096 bytes closes the connection.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// Longest line echoed; a longer one closes the connection (as line_echo).
const MAX_LINE: u64 = 4096;

async fn echo_lines(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // EOF, a partial last line, or a line too long
        }
        writer.write_all(&line).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}

/// Serves line echo on `listener` forever; each connection is a task.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = echo_lines(stream).await;
        });
    }
}

#[allow(dead_code)] // Unused where the bench includes this file as a module.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string())
        .parse()
        .map_err(|e| format!("usage: tokio_line_echo [ADDRESS:PORT] ({e})"))?;
    let listener = TcpListener::bind(addr).await?;
    // Scripts read this line to learn the port when 0 was asked.
    println!("tokio_line_echo listening on {}", listener.local_addr()?);
    serve(listener).await?;
    Ok(())
}
