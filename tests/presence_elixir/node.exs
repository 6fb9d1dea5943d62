# An Elixir node with a Phoenix.Tracker on the Redis adapter, driven by
# tests/presence_elixir.rs over stdin/stdout (one line each):
#
#   test -> node: "list" (prints the list again), "update" (updates user-1's
#                 meta to %{name: "Ada L."}), "quit"
#   node -> test: "TRACKED <phx_ref>" once user-1 is tracked, then after each
#                 command "LIST [{key, meta without phx_ref*, has phx_ref}, ...]";
#                 "DIFF <inspect>" for every handle_diff; "UPDATED".
#
# Environment: REDIS_PORT, POOL_SIZE (default 1), NODE_ATOM (set: node_name
# :"phx-a", else "phx-a"). Timing: broadcast 100 ms, 2 silent periods, down
# after 1.5 s (the Rust tests' timing).
{:ok, _} = Application.ensure_all_started(:telemetry)
port = String.to_integer(System.fetch_env!("REDIS_PORT"))
node_name = if System.get_env("NODE_ATOM"), do: :"phx-a", else: "phx-a"

defmodule MyApp.Tracker do
  use Phoenix.Tracker
  def start_link(opts), do: Phoenix.Tracker.start_link(__MODULE__, opts, opts)
  def init(_opts), do: {:ok, %{}}

  def handle_diff(diff, state) do
    IO.puts("DIFF " <> inspect(diff, limit: :infinity))
    {:ok, state}
  end
end

children = [
  {Phoenix.PubSub,
   name: MyApp.PubSub,
   adapter: Phoenix.PubSub.Redis,
   redis_opts: "redis://127.0.0.1:#{port}",
   node_name: node_name},
  {MyApp.Tracker,
   [
     name: MyApp.Tracker,
     pubsub_server: MyApp.PubSub,
     pool_size: String.to_integer(System.get_env("POOL_SIZE", "1")),
     broadcast_period: 100,
     max_silent_periods: 2,
     down_period: 1500,
     permdown_period: 60_000
   ]}
]

{:ok, _} = Supervisor.start_link(children, strategy: :one_for_one)
pid = spawn(fn -> receive do: (:stop -> :ok) end)
{:ok, ref} = Phoenix.Tracker.track(MyApp.Tracker, pid, "team:1", "user-1", %{name: "Ada"})
IO.puts("TRACKED #{ref}")

loop = fn loop ->
  list =
    Phoenix.Tracker.list(MyApp.Tracker, "team:1")
    |> Enum.map(fn {key, meta} ->
      {key, Map.drop(meta, [:phx_ref, :phx_ref_prev]), is_binary(meta[:phx_ref])}
    end)
    |> Enum.sort()

  IO.puts("LIST " <> inspect(list))

  case IO.read(:stdio, :line) do
    "update\n" ->
      {:ok, _} = Phoenix.Tracker.update(MyApp.Tracker, pid, "team:1", "user-1", %{name: "Ada L."})
      IO.puts("UPDATED")

    "quit\n" ->
      System.halt(0)

    :eof ->
      System.halt(0)

    _ ->
      :ok
  end

  loop.(loop)
end

loop.(loop)
