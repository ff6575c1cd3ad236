"""Active except handlers across two frames, bare raise, finally, a custom exception."""

class Oops(Exception):
    def __init__(self, msg, code=0):
        super().__init__(msg)
        self.code = code

def risky(x):
    if x % 2:
        raise Oops(f"odd {x}", code=x)
    return x

def handle(x):
    try:
        risky(x)
    except Oops as e:
        print("inner caught", e, e.code)
        try:
            raise ValueError("nested")
        except ValueError:
            print("nested handler", x)
            cleanup(x)
        raise
    finally:
        print("finally", x)

def cleanup(x):
    try:
        raise KeyError(x)
    except KeyError as k:
        print("cleanup sees", repr(k))
        note = f"note {x}"
    print(note)

for x in range(3):
    try:
        handle(x)
        print("no error", x)
    except Oops as e:
        print("outer caught", e, e.code, type(e.__context__))
        try:
            1 / 0
        except ZeroDivisionError as z:
            print("zde", z)
print("end")
