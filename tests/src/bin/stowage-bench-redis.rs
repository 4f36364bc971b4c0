//! `./dev bench`: a Redis dataset of at least STOWAGE_BENCH_GIB GiB (default 1) of mixed
//! types (strings, hashes, lists, sets, sorted sets, streams), backed up to the same S3
//! server two ways, one after the other in one run, with time, throughput and peak memory
//! side by side:
//!
//! - `stowage backup` with the redis plugin (replication; zstd level 3);
//! - `redis-cli --rdb - | zstd -3`, uploaded as 8 MiB parts, 4 in flight.
//!
//! Then the stowage backup is restored into an empty running server (`RESTORE` per key),
//! and the native one the way Redis users do it: download | `zstd -d` into `dump.rdb`, and
//! start a server that loads it. All three datasets are checked equal (`DEBUG DIGEST`).
//!
//! Peak memory is that of the client processes (`stowage`; `redis-cli`, `zstd` and the
//! upload buffers), not of the servers.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use stowage_tests::bench::{self, MIB, Watch};
use stowage_tests::redis::Redis;
use stowage_tests::seaweedfs::SeaweedFs;

/// Keys of each type per generating script.
const KEYS_PER_BATCH: u32 = 2000;

/// One batch of the dataset: per index a string, a hash, a list, a set and a sorted set,
/// and every 100th index a large hash, a large list and a stream entry.
const GENERATE: &str = "
local prefix = ARGV[1]
for i = 1, tonumber(ARGV[2]) do
  local k = prefix .. ':' .. i
  redis.call('SET', 'string:' .. k, string.rep('v', 150) .. i)
  redis.call('HSET', 'hash:' .. k, 'name', 'customer ' .. i, 'email', k .. '@example.com', 'balance', i * 3, 'note', string.rep('n', 40))
  redis.call('RPUSH', 'list:' .. k, 'created', 'paid:' .. i, 'shipped:' .. (i * 7), 'delivered')
  redis.call('SADD', 'set:' .. k, i, i + 1, i + 2, 'tag' .. (i % 50))
  redis.call('ZADD', 'zset:' .. k, i, 'bronze', i * 2, 'silver', i * 3, 'gold')
  if i % 100 == 0 then
    for j = 1, 1000 do
      redis.call('HSET', 'bighash:' .. k, 'field' .. j, string.rep('h', 30) .. j)
      redis.call('RPUSH', 'biglist:' .. k, 'element-' .. j)
    end
    redis.call('XADD', 'stream:' .. prefix, '*', 'index', i, 'payload', string.rep('s', 100))
  end
end
return redis.status_reply('OK')";

fn used_memory(redis: &Redis) -> anyhow::Result<u64> {
    let info = redis.cli(&["INFO", "memory"])?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .context("used_memory in INFO memory")
}

fn digest(redis: &Redis) -> anyhow::Result<String> {
    Ok(redis.cli(&["DEBUG", "DIGEST"])?.trim().to_owned())
}

/// Download the native dump, `zstd -d` it into `dump.rdb` and start a server on it.
async fn restore_native(s3: &SeaweedFs) -> anyhow::Result<((f64, u64), Redis)> {
    let dir = tempfile::tempdir()?;
    let rdb = dir.path().join("dump.rdb");
    let started = Instant::now();
    let mut zstd =
        Command::new("zstd").args(["-d", "-q", "-f", "-o"]).arg(&rdb).stdin(std::process::Stdio::piped()).spawn()?;
    let mut watch = Watch::new(&[zstd.id()]);
    bench::download(s3, "native/dump.rdb.zst", zstd.stdin.take().context("zstd stdin")?, &mut watch).await?;
    anyhow::ensure!(zstd.wait()?.success(), "zstd -d failed");
    // start_from_rdb returns once the server answers PING, i.e. after loading.
    let server = Redis::start_from_rdb(&rdb)?;
    Ok(((started.elapsed().as_secs_f64(), watch.total()), server))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let gib: f64 = std::env::var("STOWAGE_BENCH_GIB").ok().map(|v| v.parse()).transpose()?.unwrap_or(1.0);
    println!("==> Redis 7.0 and SeaweedFS on loopback");
    let source = Redis::start(&["--repl-diskless-sync-delay", "0"])?;
    let s3 = SeaweedFs::start()?;
    s3.create_bucket(bench::BUCKET).await?;
    println!("==> generating at least {gib} GiB of mixed types");
    let target = (gib * (1u64 << 30) as f64) as u64;
    let batch = KEYS_PER_BATCH.to_string();
    for number in 0.. {
        if number % 20 == 0 && used_memory(&source)? >= target {
            break;
        }
        source.cli(&["EVAL", GENERATE, "0", &format!("b{number}"), &batch])?;
    }
    let dataset = used_memory(&source)?;
    let keys = source.cli(&["DBSIZE"])?.trim().to_owned();
    println!("    {:.0} MiB in memory, {keys} keys", dataset as f64 / MIB);
    let expected = digest(&source)?;

    let cache = tempfile::tempdir()?;
    let env = bench::stowage_env(&s3, cache.path(), "redis", &[])?;
    let mut backups = Vec::new();
    println!("==> stowage backup");
    backups
        .push(bench::stowage_backup(&s3, "stowage (redis plugin)", "redis", &source.url(None), "stowage", &env).await?);
    println!("==> redis-cli --rdb - | zstd -3 + upload");
    let mut redis_cli = Command::new("redis-cli");
    redis_cli.args(["-p", &source.port.to_string(), "--rdb", "-"]).stderr(std::process::Stdio::null());
    let native = "redis-cli --rdb | zstd -3 + upload";
    backups.push(bench::native_backup(&s3, native, "native/dump.rdb.zst", redis_cli, true).await?);

    println!("==> stowage restore into an empty server");
    let restored = Redis::start(&[])?;
    let server_cpu = restored.cpu_seconds()?;
    let stowage_restore = bench::stowage_restore("redis", &restored.url(None), "stowage", &env).await?;
    let server_cpu = restored.cpu_seconds()? - server_cpu;
    println!("==> download | zstd -d > dump.rdb, start redis-server on it");
    let (native_restore, loaded) = restore_native(&s3).await?;
    for (what, server) in [("the stowage restore", &restored), ("the server on the native dump", &loaded)] {
        anyhow::ensure!(digest(server)? == expected, "{what} differs from the source (DEBUG DIGEST)");
    }
    let keys: f64 = keys.parse()?;
    bench::print_comparison(
        "used_memory of the source",
        dataset,
        &backups,
        &[("stowage restore (RESTORE per key)", stowage_restore), ("download, zstd -d, restart", native_restore)],
        "the same dataset; digests checked equal",
    );
    println!(
        "\nstowage restore: {:.0} keys/s; the target server was busy {server_cpu:.1} s of the {:.1} s",
        keys / stowage_restore.0,
        stowage_restore.0
    );
    Ok(())
}
