"""Exercises a broad slice of the standard library: the depth check then runs over its code too."""

import json, textwrap, difflib, argparse, fractions, decimal, statistics, string, csv, io, re, dataclasses, enum, collections, functools, itertools, pprint, configparser, email.message, email.parser, tokenize, ast, inspect
data = {"a": [1, 2.5, None, {"b": "c" * 20}], "d": list(range(30))}
s = json.dumps(data, indent=2, sort_keys=True); json.loads(s)
textwrap.fill("hello world " * 30, width=17)
list(difflib.unified_diff(s.splitlines(), s.replace("2", "3").splitlines()))
p = argparse.ArgumentParser(); p.add_argument("--x", type=int, default=3); p.add_argument("y", nargs="*"); p.parse_args(["--x", "4", "a", "b"])
sum(fractions.Fraction(1, k) for k in range(1, 30)); statistics.stdev([1.0, 2.0, 4.0, 8.0])
string.Template("$a $b").substitute(a=1, b=2)
buf = io.StringIO(); w = csv.writer(buf); [w.writerow([i, str(i) * 3]) for i in range(10)]; list(csv.reader(io.StringIO(buf.getvalue())))
@dataclasses.dataclass
class P:
    x: int
    y: list = dataclasses.field(default_factory=list)
dataclasses.asdict(P(1, [P(2)]))
class Color(enum.Enum):
    RED = 1; BLUE = 2
list(Color); pprint.pformat(data)
cp = configparser.ConfigParser(); cp.read_string("[s]\na = 1\nb = ${a}\n")
m = email.message.EmailMessage(); m["To"] = "x@y"; m.set_content("hi"); email.parser.Parser().parsestr(m.as_string())
list(tokenize.generate_tokens(io.StringIO(s).readline)); ast.dump(ast.parse("def f(a, *b, c=1): return [x for x in b if x]"))
inspect.signature(argparse.ArgumentParser.add_argument)
