"""Record parsing: JSON and JSONL files, both turn key styles, every modality, the placeholder
normalisations, and validation errors that name the file, the position and the record id."""

import json

import pytest

from onevision.data.records import (
    Record,
    RecordError,
    Turn,
    count_records,
    iter_raw_records,
    load_records,
    parse_record,
)


def conv(*pairs):
    return [{"from": who, "value": text} for who, text in pairs]


TEXT = {"id": "t1", "conversations": conv(("human", "Hi"), ("gpt", "Hello"))}
IMAGE = {"id": "i1", "image": "a.jpg", "conversations": conv(("human", "<image>\nWhat?"), ("gpt", "A cat."))}
MULTI = {
    "id": "m1",
    "image": ["a.jpg", "b.jpg"],
    "conversations": conv(("human", "<image> <image>\nDiffer?"), ("gpt", "Yes.")),
}
VIDEO = {"id": "v1", "video": "clip.mp4", "conversations": conv(("human", "<image>\nWhat happens?"), ("gpt", "Cooking."))}
ROLE_STYLE = {
    "id": 7,
    "image": ["only.png"],
    "conversations": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nDescribe."},
        {"role": "assistant", "content": "A dog."},
        {"role": "User", "content": "Colour?"},
        {"role": "ASSISTANT", "content": "Brown."},
    ],
}


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def write_jsonl(path, records, blank_after_first=False):
    lines = [json.dumps(r) for r in records]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_every_modality_from_file(tmp_path, kind):
    records = [TEXT, IMAGE, MULTI, VIDEO, ROLE_STYLE]
    path = tmp_path / f"data.{kind}"
    write_json(path, records) if kind == "json" else write_jsonl(path, records)
    media = tmp_path / "media"
    loaded = load_records(path, media_root=media)
    assert [r.modality for r in loaded] == ["text", "image", "multi_image", "video", "image"]
    assert [r.id for r in loaded] == ["t1", "i1", "m1", "v1", "7"]
    assert loaded[0].images == [] and loaded[0].video is None
    assert loaded[1].images == [str(media / "a.jpg")]
    assert loaded[2].images == [str(media / "a.jpg"), str(media / "b.jpg")]
    assert loaded[3].video == str(media / "clip.mp4") and loaded[3].images == []
    assert [r.index for r in loaded] == [0, 1, 2, 3, 4]
    assert [r.line for r in loaded] == ([None] * 5 if kind == "json" else [1, 2, 3, 4, 5])
    assert all(r.source == str(path) for r in loaded)
    assert loaded[1].turns == [Turn("user", "<image>\nWhat?"), Turn("assistant", "A cat.")]
    assert [t.role for t in loaded[4].turns] == ["system", "user", "assistant", "user", "assistant"]
    assert count_records(path) == 5


def test_media_root_defaults_to_file_folder_and_keeps_absolute_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_json(tmp_path / "sub" / "d.json", [IMAGE, dict(IMAGE, image="/abs/a.jpg")])
    loaded = load_records(path)
    assert loaded[0].images == [str(tmp_path / "sub" / "a.jpg")]
    assert loaded[1].images == ["/abs/a.jpg"]


def test_video_placeholder_becomes_video_token():
    record = parse_record(VIDEO)
    assert record.turns[0] == Turn("user", "<video>\nWhat happens?")
    already = parse_record(dict(VIDEO, conversations=conv(("human", "Watch <video> now"), ("gpt", "Ok"))))
    assert already.turns[0].text == "Watch <video> now"


def test_missing_placeholder_is_prepended_to_first_user_turn():
    image = parse_record(
        {"id": "p", "image": "a.jpg", "conversations": conv(("system", "S"), ("human", "Describe."), ("gpt", "X"))}
    )
    assert image.turns[1] == Turn("user", "<image>\nDescribe.")
    video = parse_record({"id": "q", "video": "v.mp4", "conversations": conv(("human", "Describe."), ("gpt", "X"))})
    assert video.turns[0] == Turn("user", "<video>\nDescribe.")


def test_record_without_id_is_named_by_index():
    record = parse_record({"conversations": conv(("human", "a"), ("gpt", "b"))}, index=12)
    assert record.id == "#12"
    assert isinstance(record, Record)


def test_jsonl_blank_lines_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [TEXT, IMAGE], blank_after_first=True)
    assert [(index, line) for index, line, _ in iter_raw_records(path)] == [(0, 1), (1, 3)]
    assert count_records(path) == 2
    assert load_records(path)[1].line == 3


BAD = [
    ({"id": "x"}, "no 'conversations'"),
    ({"id": "x", "conversations": []}, "'conversations' is empty"),
    ({"id": "x", "conversations": "hi"}, "expected a list"),
    ({"id": "x", "conversations": conv(("human", "a"), ("robot", "b"))}, "turn 1 has unknown role 'robot'"),
    ({"id": "x", "conversations": [{"value": "a"}]}, "turn 0 has no role"),
    ({"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "b"}]}, "expected a string"),
    ({"id": "x", "conversations": conv(("gpt", "a"), ("human", "b"))}, "turn 0 is 'assistant' but 'user'"),
    ({"id": "x", "conversations": conv(("human", "a"), ("human", "b"))}, "turn 1 is 'user' but 'assistant'"),
    ({"id": "x", "conversations": conv(("human", "a"), ("gpt", "b"), ("human", "c"))}, "ends with a user turn"),
    ({"id": "x", "conversations": conv(("system", "s"))}, "only system turns"),
    ({"id": "x", "conversations": conv(("human", "<image>\na"), ("gpt", "b"))}, "1 <image> placeholder(s) but 0 image"),
    ({"id": "x", "image": "a.jpg", "conversations": conv(("human", "<image><image>"), ("gpt", "b"))}, "2 <image> placeholder(s) but 1 image"),
    ({"id": "x", "image": ["a", "b"], "conversations": conv(("human", "<image>"), ("gpt", "b"))}, "1 <image> placeholder(s) but 2 image"),
    ({"id": "x", "image": ["a", "b"], "conversations": conv(("human", "q"), ("gpt", "b"))}, "0 <image> placeholder(s) but 2 image"),
    ({"id": "x", "video": "v.mp4", "conversations": conv(("human", "<image><video>"), ("gpt", "b"))}, "expected 1"),
    ({"id": "x", "conversations": conv(("human", "<video>"), ("gpt", "b"))}, "<video> placeholder(s) but no 'video'"),
    ({"id": "x", "image": "a.jpg", "video": "v.mp4", "conversations": conv(("human", "<image>"), ("gpt", "b"))}, "both 'image'"),
    ({"id": "x", "image": "a.jpg", "conversations": conv(("human", "<image>"), ("gpt", "see <image>"))}, "turn 1 (assistant) contains a media placeholder"),
    ({"id": "x", "image": 5, "conversations": conv(("human", "<image>"), ("gpt", "b"))}, "'image' must be a non-empty path"),
    ({"id": "x", "video": ["a.mp4", "b.mp4"], "conversations": conv(("human", "<video>"), ("gpt", "b"))}, "one path, got 2"),
    ({"id": "x", "conversations": conv(("human", "a\ud800b"), ("gpt", "b"))}, "turn 0 (user) text holds an unpaired surrogate '\\ud800' at character 1"),
    ({"id": "x", "image": "a\x00.jpg", "conversations": conv(("human", "<image>"), ("gpt", "b"))}, "holds a NUL character"),
    ({"id": "x", "image": "\udc80.jpg", "conversations": conv(("human", "<image>"), ("gpt", "b"))}, "path '\\udc80.jpg' holds an unpaired surrogate"),
]


@pytest.mark.parametrize("kind", ["json", "jsonl"])
@pytest.mark.parametrize("record,problem", BAD, ids=[problem for _, problem in BAD])
def test_validation_errors_name_file_position_and_id(tmp_path, kind, record, problem):
    path = tmp_path / f"bad.{kind}"
    records = [TEXT, record]
    write_json(path, records) if kind == "json" else write_jsonl(path, records)
    with pytest.raises(RecordError) as error:
        load_records(path)
    message = str(error.value)
    place = f"{path}[1]" if kind == "json" else f"{path}:2"
    assert message.startswith(f"{place} (id=x): "), message
    assert problem in message, message


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_records(tmp_path / "missing.json")
    with pytest.raises(RecordError, match=r"unsupported record file type '\.txt'"):
        load_records(tmp_path / "d.txt")
    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(RecordError, match=r"obj\.json: expected a JSON list of records, got a dict"):
        load_records(tmp_path / "obj.json")
    (tmp_path / "broken.jsonl").write_text(json.dumps(TEXT) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"broken\.jsonl:2: invalid JSON"):
        load_records(tmp_path / "broken.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(RecordError, match=r"list\.jsonl:1: record is a list"):
        load_records(tmp_path / "list.jsonl")


def test_bad_id_types_are_named_without_echoing_huge_values():
    deep = []
    for _ in range(5000):
        deep = [deep]
    for bad, kind in [(deep, "list"), ({"a": 1}, "dict"), (1.5, "float"), (True, "bool")]:
        with pytest.raises(RecordError, match=rf"^f\.json\[3\]: 'id' is a {kind} \(.{{1,90}}\), expected a string or an integer$"):
            parse_record({"id": bad, "conversations": conv(("human", "a"), ("gpt", "b"))}, source="f.json", index=3)
    long_id = "x" * 10_000
    with pytest.raises(RecordError) as error:
        parse_record({"id": long_id, "conversations": []}, source="f.json")
    assert len(str(error.value)) < 200 and "(id=xxx" in str(error.value)
    huge_image = {"id": "h", "image": [[["a"] * 1000] * 1000], "conversations": conv(("human", "<image>"), ("gpt", "b"))}
    with pytest.raises(RecordError, match="'image' must be a non-empty path") as error:
        parse_record(huge_image, source="f.json")
    assert len(str(error.value)) < 300


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_invalid_utf8_names_file_line_and_byte(tmp_path, kind):
    good = json.dumps(TEXT).encode()
    bad = json.dumps(IMAGE).encode().replace(b"What?", b"Wh\xff\xfet?")
    path = tmp_path / f"d.{kind}"
    column = bad.index(b"\xff") + 1
    if kind == "json":
        path.write_bytes(b"[" + good + b",\n" + bad + b"]")
        pattern = rf"d\.json: line 2, byte {column} \(file byte {len(good) + 3 + column - 1}\): not valid UTF-8"
    else:
        path.write_bytes(good + b"\n" + bad + b"\n")
        pattern = rf"d\.jsonl:2: byte {column}: not valid UTF-8 \(invalid start byte"
    with pytest.raises(RecordError, match=pattern):
        load_records(path)


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_utf8_bom_is_accepted(tmp_path, kind):
    path = tmp_path / f"d.{kind}"
    body = json.dumps([TEXT, IMAGE]) if kind == "json" else json.dumps(TEXT) + "\n" + json.dumps(IMAGE) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert [r.id for r in load_records(path)] == ["t1", "i1"]
    assert count_records(path) == 2


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_deep_nesting_names_file_and_line_instead_of_recursion_error(tmp_path, kind):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / f"d.{kind}"
    if kind == "json":
        path.write_text("[\n" + json.dumps(TEXT) + ",\n" + deep + "\n]")
        pattern = r"d\.json: line 3: JSON nested 100001 levels deep, too deep to parse"
    else:
        path.write_text(json.dumps(TEXT) + "\n" + '{"id": ' + deep + "}\n")
        pattern = r"d\.jsonl:2: JSON nested 100001 levels deep, too deep to parse"
    with pytest.raises(RecordError, match=pattern):
        load_records(path)


def test_overlong_number_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(TEXT) + "\n" + '{"id": ' + "9" * 5000 + "}\n")
    with pytest.raises(RecordError, match=r"d\.jsonl:2: unreadable JSON value: Exceeds the limit"):
        load_records(path)
    path = tmp_path / "d.json"
    path.write_text("[\n" + json.dumps(TEXT) + ',\n{"id": ' + "9" * 5000 + "}]")
    with pytest.raises(RecordError, match=r"d\.json: line 3: unreadable JSON value: Exceeds the limit"):
        load_records(path)


def test_jsonl_lines_split_on_newline_only_and_count_matches(tmp_path):
    """A lone \\r or a Unicode separator is not a line break, and only ASCII whitespace is blank."""
    path = tmp_path / "d.jsonl"
    first = json.dumps(dict(TEXT, conversations=conv(("human", "a\u2028b"), ("gpt", "c"))), ensure_ascii=False)
    path.write_bytes(first.encode() + b"\r\n \t\r\n" + json.dumps(IMAGE).encode() + b"\n")
    assert [(index, line) for index, line, _ in iter_raw_records(path)] == [(0, 1), (1, 3)]
    assert count_records(path) == 2
    assert load_records(path)[0].turns[0].text == "a\u2028b"
    path.write_bytes(json.dumps(TEXT).encode() + b"\n\x1c\n")
    assert count_records(path) == 2
    with pytest.raises(RecordError, match=r"d\.jsonl:2: invalid JSON"):
        load_records(path)
