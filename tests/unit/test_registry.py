import pytest

from distributed_tasks import DistributedTask, NotRegistered, distributed_task
from distributed_tasks.exceptions import InvalidConfiguration
from distributed_tasks.registry import registered_paths, resolve
from tests import tasks


def test_decorated_function_is_registered_under_its_dotted_path():
    entry = resolve(tasks.add)
    assert entry.path == "tests.tasks.add"
    assert resolve("tests.tasks.add") is entry
    assert "tests.tasks.add" in registered_paths()


def test_decorated_function_stays_callable():
    assert tasks.add(2, 3) == 5


def test_class_form_registers_itself():
    entry = resolve(tasks.Hooked)
    assert entry.path == "tests.tasks.Hooked"
    assert isinstance(entry.create(), tasks.Hooked)
    assert resolve("tests.tasks.Hooked") is entry


def test_abstract_base_is_not_registered():
    class Base(DistributedTask):
        abstract = True

    with pytest.raises(NotRegistered):
        resolve(Base)


def test_unregistered_importable_path_is_refused_without_import():
    with pytest.raises(NotRegistered, match="not a registered distributed task"):
        resolve("os.system")


def test_plain_callable_is_refused():
    def helper():
        pass

    with pytest.raises(NotRegistered):
        resolve(helper)


@pytest.mark.parametrize("ref", [None, 42, b"tests.tasks.add"])
def test_non_references_are_refused(ref):
    with pytest.raises(NotRegistered):
        resolve(ref)


def test_functions_defined_in_functions_are_rejected():
    with pytest.raises(InvalidConfiguration, match="module level"):

        @distributed_task
        def inner():
            pass


def test_module_level_options():
    entry = resolve("tests.tasks.with_options")
    assert (entry.timeout, entry.max_attempts) == (7, 3)
