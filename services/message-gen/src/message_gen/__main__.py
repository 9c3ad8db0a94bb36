from message_gen.app import create_app
from message_gen.settings import GeneratorSettings
from streaming_runtime.service import serve


def main() -> None:
    serve("message-gen", GeneratorSettings, create_app)


if __name__ == "__main__":
    main()
