// Unit tests of the CLI's JSON writer: escaping of everything a payload or
// error from another client may hold, commas, JSON lines, and bytes as text
// or base64.
#include "client/json_writer.h"

#include <string>

#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

TEST(JsonQuote, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonQuote("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonQuote("\n\t\r\b\f"), R"("\n\t\r\b\f")");
  EXPECT_EQ(JsonQuote(std::string("\x00\x01\x1b\x1f", 4)), R"("\u0000\u0001\u001b\u001f")");
}

TEST(JsonQuote, EscapesWhatCouldSteerATerminal) {
  // DEL, the 8-bit CSI (U+009B), a bidi override, the JS line separator.
  EXPECT_EQ(JsonQuote("\x7f\xc2\x9b\xe2\x80\xae\xe2\x80\xa8"), R"("\u007f\u009b\u202e\u2028")");
}

TEST(JsonQuote, KeepsValidUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(JsonQuote("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\"");
  // A lone continuation byte, a truncated sequence, an overlong '/', a
  // surrogate: each byte that is not part of valid UTF-8 becomes U+FFFD.
  EXPECT_EQ(JsonQuote("\x80"), R"("\ufffd")");
  EXPECT_EQ(JsonQuote("a\xe2\x9c"), R"("a\ufffd\ufffd")");
  EXPECT_EQ(JsonQuote("\xc0\xaf"), R"("\ufffd\ufffd")");
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");
}

TEST(IsValidUtf8, AcceptsTextRejectsBinary) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8(std::string("a\x00z", 3)));
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

TEST(JsonWriter, PlacesCommasInNestedContainers) {
  JsonWriter w;
  w.BeginObject().Key("a").Uint(1).Key("b").BeginArray().Int(-2).Bool(true).EndArray();
  w.Key("c").BeginObject().EndObject().Key("d").String("x").EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"b":[-2,true],"c":{},"d":"x"})");
}

TEST(JsonWriter, TopLevelValuesAreJsonLines) {
  JsonWriter w;
  w.BeginObject().Key("a").Uint(1).EndObject();
  w.BeginObject().Key("a").Uint(2).EndObject();
  EXPECT_EQ(w.str(), "{\"a\":1}\n{\"a\":2}");
}

TEST(JsonWriter, BytesAsTextOrBase64) {
  JsonWriter text;
  text.BeginObject().Bytes("payload", "h\xc3\xa9\n").EndObject();
  EXPECT_EQ(text.str(), R"({"payload":"hé\n"})");
  JsonWriter binary;
  binary.BeginObject().Bytes("payload", std::string("\xff\x00\x01", 3)).EndObject();
  EXPECT_EQ(binary.str(), R"({"payload_base64":"/wAB"})");
}

TEST(JsonWriter, LargestIntegersAreExact) {
  JsonWriter w;
  w.BeginArray().Uint(UINT64_MAX).Int(INT64_MIN).EndArray();
  EXPECT_EQ(w.str(), "[18446744073709551615,-9223372036854775808]");
}

}  // namespace
}  // namespace taskq::cli
