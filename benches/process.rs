//! What a core-loop tick pays to learn that none of its agent processes'
//! descriptors (pidfds, links, log pipes) has anything: io_uring multishot
//! polls (the completion queue is read; no system call) against `poll(2)`
//! over every descriptor, for 16 and 64 idle descriptors.

use std::hint::black_box;
use std::os::fd::AsFd;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pinwheel::process::watch::Watcher;

fn watch_ready(c: &mut Criterion) {
    let mut group = c.benchmark_group("process/watch_ready");
    for count in [16usize, 64] {
        let fds: Vec<EventFd> = (0..count)
            .map(|_| EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).expect("eventfd"))
            .collect();
        for uring in [true, false] {
            let mut watcher = Watcher::new(uring);
            for (token, fd) in fds.iter().enumerate() {
                watcher.watch(token as u64, fd.as_fd());
            }
            let mut ready = Vec::with_capacity(count);
            // The first call submits the registrations.
            watcher.ready(&mut ready).expect("ready");
            group.bench_with_input(BenchmarkId::new(watcher.name(), count), &count, |b, _| {
                b.iter(|| {
                    ready.clear();
                    watcher.ready(black_box(&mut ready)).expect("ready");
                    black_box(ready.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, watch_ready);
criterion_main!(benches);
