from functools import partial

from message_proc.app import ProcessorSettings, create_app
from streaming_runtime.service import serve


def main() -> None:
    serve("message-proc", ProcessorSettings, partial(create_app, freeze_heap=True))


if __name__ == "__main__":
    main()
