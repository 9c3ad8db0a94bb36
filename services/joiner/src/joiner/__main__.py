import gc
import sys


def main() -> None:
    # windows hold many small objects: with the default thresholds the collector would run every
    # 700 allocations and rescan them; the buffers have no reference cycles to find
    gc.set_threshold(50_000, 20, 50)
    if len(sys.argv) > 1 and sys.argv[1] == "replay":
        from joiner.replay import main as replay

        raise SystemExit(replay(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "explain":
        from joiner.explain import main as explain

        raise SystemExit(explain(sys.argv[2:]))
    # the web app and the Dapr SDK only where the service runs: the tools above start without them
    from joiner.app import JoinerSettings, create_app
    from streaming_runtime.service import serve

    serve("joiner", JoinerSettings, create_app)


if __name__ == "__main__":
    main()
