from joiner.app import JoinerSettings, create_app
from streaming_runtime.service import serve


def main() -> None:
    serve("joiner", JoinerSettings, create_app)


if __name__ == "__main__":
    main()
