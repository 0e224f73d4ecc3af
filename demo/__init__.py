"""Interactive demos: the animation editor `Demo` and the composition editor `DemoCompose`, as in the original
(`from demo import Demo`, `from demo import DemoCompose as Demo`)."""
from demo.demo import Demo
from demo.demo_compose import DemoCompose

__all__ = ["Demo", "DemoCompose"]
