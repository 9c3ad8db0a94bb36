import sys

from joiner.app import JoinerSettings, create_app
from streaming_runtime.service import serve


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "replay":
        from joiner.replay import main as replay

        raise SystemExit(replay(sys.argv[2:]))
    serve("joiner", JoinerSettings, create_app)


if __name__ == "__main__":
    main()
