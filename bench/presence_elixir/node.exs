# One Elixir node for `cluster_bench --only presence-elixir`: a
# Phoenix.Tracker (phoenix_pubsub 2.2) on the Redis adapter
# (phoenix_pubsub_redis 3.x), node name NODE, tracking N presences on 100
# topics (the names cluster_bench's presences have,
# "staff:person:01930000-0000-7000-8000-0002000000<hex of i mod 100>"), key
# "user-<i>", meta %{m: "viewing page"}, from one process. Prints "STARTED" once its tracker runs, "TRACKED" once
# it tracks its N, and "LISTED <count>" as soon as it lists EXPECT presences
# over the 100 topics (polled every 10 ms); then waits for stdin to close.
#
# Environment: REDIS_PORT, NODE, N, EXPECT, BROADCAST_MS (Phoenix's other
# timing options left at their defaults: max_silent_periods 10, down_period
# broadcast_period × 20).
{:ok, _} = Application.ensure_all_started(:telemetry)
port = String.to_integer(System.fetch_env!("REDIS_PORT"))
n = String.to_integer(System.fetch_env!("N"))
expect = String.to_integer(System.fetch_env!("EXPECT"))
broadcast = String.to_integer(System.fetch_env!("BROADCAST_MS"))

defmodule Bench.Tracker do
  use Phoenix.Tracker
  def start_link(opts), do: Phoenix.Tracker.start_link(__MODULE__, opts, opts)
  def init(_opts), do: {:ok, %{}}
  def handle_diff(_diff, state), do: {:ok, state}
end

children = [
  {Phoenix.PubSub,
   name: Bench.PubSub,
   adapter: Phoenix.PubSub.Redis,
   redis_opts: "redis://127.0.0.1:#{port}",
   node_name: System.fetch_env!("NODE")},
  {Bench.Tracker,
   [name: Bench.Tracker, pubsub_server: Bench.PubSub, broadcast_period: broadcast]}
]

{:ok, _} = Supervisor.start_link(children, strategy: :one_for_one)
IO.puts("STARTED")
pid = spawn(fn -> receive do: (:stop -> :ok) end)

topic = fn t ->
  hex = t |> Integer.to_string(16) |> String.downcase() |> String.pad_leading(2, "0")
  "staff:person:01930000-0000-7000-8000-0002000000" <> hex
end

for i <- 0..(n - 1)//1 do
  {:ok, _} =
    Phoenix.Tracker.track(Bench.Tracker, pid, topic.(rem(i, 100)), "user-#{i}", %{
      m: "viewing page"
    })
end

IO.puts("TRACKED")

count = fn ->
  Enum.reduce(0..99, 0, fn t, sum ->
    sum + length(Phoenix.Tracker.list(Bench.Tracker, topic.(t)))
  end)
end

wait = fn wait ->
  case count.() do
    ^expect ->
      :ok

    _ ->
      Process.sleep(10)
      wait.(wait)
  end
end

wait.(wait)
IO.puts("LISTED #{expect}")
IO.read(:stdio, :eof)
System.halt(0)
