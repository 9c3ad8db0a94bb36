from message_proc.app import ProcessorSettings, create_app
from streaming_runtime.service import serve


def main() -> None:
    serve("message-proc", ProcessorSettings, create_app)


if __name__ == "__main__":
    main()
