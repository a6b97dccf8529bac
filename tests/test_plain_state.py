"""mmbcn.engine.checkpoint.plain_state at unit level: each kind of object
it encodes comes back as the same type and value through torch.save and
torch.load(weights_only=True); what it cannot store is refused with the
place where it sits."""
import collections
import datetime
import enum
import io
import pathlib

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmbcn.engine.checkpoint.plain_state import TAG, decode, encode


class Colour(enum.Enum):
    RED = 1
    GREEN = 'g'


class Level(str, enum.Enum):
    LOW = 'low'


def through_weights_only(obj):
    buffer = io.BytesIO()
    torch.save(encode(obj), buffer)
    buffer.seek(0)
    return decode(torch.load(buffer, weights_only=True))


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == object:
            for x, y in zip(a.ravel(), b.ravel()):
                assert_same(x, y)
        else:
            assert a.tobytes() == b.tobytes()
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, HistoryBuffer):
        assert_same(a._log_history, b._log_history)
        assert_same(a._count_history, b._count_history)
        assert a.max_length == b.max_length
    elif isinstance(a, (np.generic, float)) and a != a:  # NaN
        assert b != b
    else:
        assert a == b


def history():
    buffer = HistoryBuffer(max_length=5)
    for value, count in ((1.5, 2), (0.25, 1), (3.0, 4)):
        buffer.update(value, count)
    return buffer


CASES = {
    'numpy float64 scalar': np.float64(0.1),
    'numpy NaN scalar': np.float32('nan'),
    'numpy int scalar': np.int8(-7),
    'numpy bool scalar': np.bool_(False),
    'numpy complex scalar': np.complex64(1 - 2j),
    'float32 array': np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
    'uint16 array': np.array([0, 1, 65535], dtype=np.uint16),
    'uint32 array': np.array([2**32 - 1], dtype=np.uint32),
    'big-endian array': np.arange(4, dtype='>i4'),
    'empty array': np.zeros((0, 3), dtype=np.float64),
    'non-contiguous array': np.arange(12.0).reshape(3, 4)[:, ::2],
    'string array': np.array(['a', 'bcd']),
    'bytes array': np.array([b'x', b'yz']),
    'datetime64 array': np.array(['2026-01-01', '2026-06-30'],
                                 dtype='datetime64[D]'),
    'datetime64 scalar': np.datetime64('2026-12-01T08:30:05'),
    'timedelta64 array': np.array([1, 2], dtype='timedelta64[s]'),
    'object array': np.array([{'a': 1}, [2, 3], None, 'x'], dtype=object),
    'numpy dtype': np.dtype('float16'),
    'HistoryBuffer': history(),
    'empty HistoryBuffer': HistoryBuffer(),
    'Counter': collections.Counter({'a': 2, 'b': 0}),
    'OrderedDict': collections.OrderedDict(b=1, a=2),
    'set': {1, 'a', (2, 3)},
    'frozenset': frozenset({2.5}),
    'empty set': set(),
    'Path': pathlib.Path('/data/coco/train.json'),
    'PurePosixPath': pathlib.PurePosixPath('a/b'),
    'PureWindowsPath': pathlib.PureWindowsPath('C:\\data'),
    'datetime': datetime.datetime(2026, 12, 1, 8, 30, 5, 123),
    'aware datetime': datetime.datetime(
        2026, 12, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    'date': datetime.date(2026, 12, 1),
    'time': datetime.time(23, 59, 59, 999999),
    'timedelta': datetime.timedelta(days=-1, seconds=5, microseconds=7),
    'enum': Colour.GREEN,
    'str enum': Level.LOW,
    'bytes': b'\x00\xffraw',
    'bytearray': bytearray(b'ab'),
    'dict with numpy keys': {np.int64(3): 'three', np.str_('k'): 1.0},
    'dict with tuple keys': {(1, 'x'): [np.float32(1.5)]},
    'dict with frozenset key': {frozenset({1}): 'one'},
    'nested': {'meta': [({'hist': history()}, {np.int32(1)})]},
    'tensor': torch.arange(3, dtype=torch.int16),
    'torch dtype and device': [torch.float16, torch.device('cpu')],
}


@pytest.mark.parametrize('name', list(CASES))
def test_round_trip_through_weights_only_load(name):
    obj = CASES[name]
    if name in ('set', 'empty set', 'frozenset'):
        back = through_weights_only(obj)
        assert type(back) is type(obj) and back == obj
        return
    assert_same(obj, through_weights_only(obj))


def test_every_case_needs_encoding_or_passes_weights_only_as_it_is():
    """The cases are real: each one that is not a primitive or a tensor
    is refused by weights-only loading without the encoding."""
    refused = []
    for name, obj in CASES.items():
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        buffer.seek(0)
        try:
            torch.load(buffer, weights_only=True)
        except Exception:
            refused.append(name)
    assert {'numpy float64 scalar', 'float32 array', 'HistoryBuffer',
            'Path', 'datetime', 'enum', 'numpy dtype',
            'dict with numpy keys', 'nested'} <= set(refused)


def test_encode_leaves_its_input_alone():
    obj = {'a': np.arange(3), 'b': [history()], 'c': {1, 2}}
    before = repr(obj)
    encoded = encode(obj)
    assert repr(obj) == before
    encoded['a'][TAG] = 'changed'
    assert isinstance(obj['a'], np.ndarray)


def test_tensors_and_primitives_are_stored_as_they_are():
    tensor = torch.ones(2)
    obj = {'t': tensor, 'n': None, 's': 'x', 'i': 3, 'f': 0.5}
    encoded = encode(obj)
    assert encoded['t'] is tensor
    assert encoded == obj


def test_torch_size_keeps_its_type():
    assert_same(torch.Size([2, 3]), through_weights_only(torch.Size([2, 3])))


Point = collections.namedtuple('Point', 'x y')


def test_namedtuple_is_refused_by_name():
    """Its field names would be lost in a plain tuple: refused, naming
    where it sits and its type, before anything is written."""
    with pytest.raises(TypeError, match=r"checkpoint\['p'\] holds a "
                       r'.*Point'):
        encode({'p': Point(1, 2)})


def test_enum_whose_class_is_not_imported_decodes_to_its_value():
    encoded = encode(Colour.RED)
    encoded['module'] = 'no_such_module_here'
    assert decode(encoded) == 1


@pytest.mark.parametrize('obj,where', [
    ({'meta': {'hook': torch.nn.ReLU()}},
     r"checkpoint\['meta'\]\['hook'\] holds a torch.nn.modules."
     r'activation.ReLU'),
    ({'meta': [1, object()]}, r"checkpoint\['meta'\]\[1\] holds a "
     r'builtins.object'),
    ({'s': {lambda: 0}}, r"checkpoint\['s'\]\{\} holds a builtins.function"),
    ({np.int64(1): lambda: 0}, r'checkpoint\[np.int64\(1\)\] holds'),
    ({'a': np.array([object()], dtype=object)},
     r"checkpoint\['a'\]\[\] holds a builtins.object"),
])
def test_what_cannot_be_stored_is_named_where_it_sits(obj, where):
    with pytest.raises(TypeError, match=where + '.*convert it to plain'):
        encode(obj)


def test_structured_numpy_arrays_are_refused():
    array = np.zeros(2, dtype=[('x', np.float32), ('y', np.int8)])
    with pytest.raises(TypeError,
                       match=r"checkpoint\['rec'\] holds a numpy array of "
                       'structured dtype'):
        encode({'rec': array})


def test_unknown_tag_is_refused_on_decode():
    with pytest.raises(ValueError, match=f"unknown {TAG} tag 'Future'.*"
                       'newer mmbcn'):
        decode({'meta': [{TAG: 'Future', 'x': 1}]})


def test_files_of_the_earlier_formats_decode():
    """Scalars and object arrays as written before numpy_scalar_array and
    the object array's shape were stored."""
    old_scalar = {TAG: 'numpy_scalar', 'dtype': '<f8', 'value': 0.5}
    assert_same(decode(old_scalar), np.float64(0.5))
    old_objects = {TAG: 'object_ndarray', 'items': ['a', 1]}
    assert_same(decode(old_objects), np.array(['a', 1], dtype=object))
